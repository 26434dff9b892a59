# Stand-in for Slicer's UseSlicer.cmake: the extension name, install folders, metadata defaults,
# testing switch, and the macros a scripted module uses (see SlicerConfig.cmake).

if(NOT DEFINED EXTENSION_NAME)
  set(EXTENSION_NAME "${PROJECT_NAME}")
endif()
if("${EXTENSION_NAME}" MATCHES "^$|^Slicer$|^Project$")
  message(FATAL_ERROR "Call project(<extension name>) before include(\${Slicer_USE_FILE})")
endif()

# A regular (not bundled) extension on Linux installs with no root or bundle prefix.
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "${Slicer_QTSCRIPTEDMODULES_LIB_DIR}")

# Metadata defaults, as Slicer sets them. Slicer's own README and licence are the default files:
# any existing file stands in for them here.
foreach(default IN ITEMS "DEPENDS;NA" "RECOMMENDS;NA" "BUILD_SUBDIRECTORY;." "ENABLED;1"
    "README_FILE;${CMAKE_CURRENT_LIST_FILE}" "LICENSE_FILE;${CMAKE_CURRENT_LIST_FILE}")
  list(GET default 0 name)
  list(GET default 1 value)
  if(NOT DEFINED EXTENSION_${name})
    set(EXTENSION_${name} "${value}")
  endif()
endforeach()

option(BUILD_TESTING "Build the testing tree." ON)

#-----------------------------------------------------------------------------
# CTK's ctkMacroCompilePythonScript: copies SCRIPTS and RESOURCES into DESTINATION_DIR at build
# time and installs that whole folder (its content with NO_INSTALL_SUBDIR, else the folder
# itself) into INSTALL_DIR. Where a file lands is what this stand-in reproduces:
#  - a relative path is taken from SOURCE_DIR (default: the current source folder) and keeps
#    that relative path under DESTINATION_DIR, so "../x" lands OUTSIDE it and is not installed;
#  - an absolute script lands at its path relative to the current binary folder, an absolute
#    resource at DESTINATION_DIR/<its absolute path>;
#  - a script whose extension lacks "py" gets ".py" appended.
# Unlike CTK it stops on an unknown keyword (CTK would take the word for a file) and on a
# TARGET_NAME used twice (CTK would silently copy only the first call's files).
function(ctkMacroCompilePythonScript)
  cmake_parse_arguments(MY "NO_INSTALL_SUBDIR" "TARGET_NAME;SOURCE_DIR;DESTINATION_DIR;INSTALL_DIR"
    "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "ctkMacroCompilePythonScript: unknown arguments ${MY_UNPARSED_ARGUMENTS}")
  endif()
  foreach(name TARGET_NAME SCRIPTS DESTINATION_DIR INSTALL_DIR)
    if(NOT DEFINED MY_${name})
      message(FATAL_ERROR "ctkMacroCompilePythonScript: ${name} is mandatory")
    endif()
  endforeach()
  set(target "Copy${MY_TARGET_NAME}PythonFiles")
  if(TARGET ${target})
    message(FATAL_ERROR "ctkMacroCompilePythonScript: TARGET_NAME ${MY_TARGET_NAME} is used twice")
  endif()
  if(NOT DEFINED MY_SOURCE_DIR)
    set(MY_SOURCE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  endif()
  get_filename_component(MY_SOURCE_DIR "${MY_SOURCE_DIR}" REALPATH)
  get_filename_component(MY_DESTINATION_DIR "${MY_DESTINATION_DIR}" REALPATH)

  set(copies)  # "kind|source|destination" entries
  foreach(file IN LISTS MY_SCRIPTS)
    get_filename_component(extension "${file}" EXT)
    if(NOT "${extension}" MATCHES "py")
      set(file "${file}.py")
    endif()
    if(IS_ABSOLUTE "${file}")
      file(RELATIVE_PATH relative "${CMAKE_CURRENT_BINARY_DIR}" "${file}")
      list(APPEND copies "script|${file}|${MY_DESTINATION_DIR}/${relative}")
    else()
      list(APPEND copies "script|${MY_SOURCE_DIR}/${file}|${MY_DESTINATION_DIR}/${file}")
    endif()
  endforeach()
  foreach(file IN LISTS MY_RESOURCES)
    if(IS_ABSOLUTE "${file}")
      set(source "${file}")
    else()
      set(source "${MY_SOURCE_DIR}/${file}")
    endif()
    list(APPEND copies "resource|${source}|${MY_DESTINATION_DIR}/${file}")
  endforeach()

  set(outputs)
  foreach(copy IN LISTS copies)
    string(REPLACE "|" ";" copy "${copy}")
    list(GET copy 0 kind)
    list(GET copy 1 source)
    list(GET copy 2 destination)
    # Resolve "..", as the file system does when CTK's copy command writes there.
    get_filename_component(destination "${destination}" ABSOLUTE)
    slicer_stand_in_record(copy "${MY_TARGET_NAME}" "${kind}" "${source}" "${destination}")
    add_custom_command(OUTPUT "${destination}"
      COMMAND "${CMAKE_COMMAND}" -E copy "${source}" "${destination}"
      DEPENDS "${source}")
    list(APPEND outputs "${destination}")
  endforeach()
  if(outputs)
    add_custom_target(${target} ALL DEPENDS ${outputs})
  endif()

  set(directory "${MY_DESTINATION_DIR}")
  if(MY_NO_INSTALL_SUBDIR)
    set(directory "${directory}/")  # install the folder's content, not the folder
  endif()
  slicer_stand_in_record(install_directory "${directory}" "${MY_INSTALL_DIR}")
  install(DIRECTORY "${directory}" DESTINATION "${MY_INSTALL_DIR}" USE_SOURCE_PERMISSIONS)
endfunction()

#-----------------------------------------------------------------------------
# Slicer's slicerMacroBuildScriptedModule: every SCRIPTS and RESOURCES entry must exist relative
# to the module's source folder (a script may omit ".py"; a generated file is accepted); the files
# go to <build>/<qt-scripted-modules>[/<module folder> WITH_SUBDIR] through the CTK macro, and
# WITH_GENERIC_TESTS asks for Slicer's generic module tests when BUILD_TESTING is on.
function(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY_SLICER "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES"
    ${ARGN})
  if(MY_SLICER_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "Unknown keywords given to slicerMacroBuildScriptedModule(): \"${MY_SLICER_UNPARSED_ARGUMENTS}\"")
  endif()
  if(NOT DEFINED MY_SLICER_NAME)
    message(FATAL_ERROR "NAME is mandatory")
  endif()
  foreach(value IN LISTS MY_SLICER_SCRIPTS MY_SLICER_RESOURCES)
    set(path "${value}")
    set(generated_path "${value}")
    if(NOT IS_ABSOLUTE "${value}")
      set(path "${CMAKE_CURRENT_SOURCE_DIR}/${value}")
      set(generated_path "${CMAKE_CURRENT_BINARY_DIR}/${value}")
    endif()
    if(NOT EXISTS "${path}" AND NOT EXISTS "${path}.py")
      get_source_file_property(generated "${generated_path}" GENERATED)
      if(NOT generated)
        message(FATAL_ERROR "slicerMacroBuildScriptedModule given nonexistent file or directory '${value}'")
      endif()
    endif()
  endforeach()
  if(NOT Slicer_USE_PYTHONQT)
    message(FATAL_ERROR "Scripted module ${MY_SLICER_NAME} needs Slicer_USE_PYTHONQT")
  endif()

  set(destination "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}")
  set(no_install_subdir NO_INSTALL_SUBDIR)
  if(MY_SLICER_WITH_SUBDIR)
    get_filename_component(subdir "${CMAKE_CURRENT_SOURCE_DIR}" NAME)
    set(destination "${destination}/${subdir}")
    set(no_install_subdir "")
  endif()
  slicer_stand_in_record(scripted_module "${MY_SLICER_NAME}" "${CMAKE_CURRENT_SOURCE_DIR}")
  ctkMacroCompilePythonScript(
    TARGET_NAME ${MY_SLICER_NAME}
    SCRIPTS "${MY_SLICER_SCRIPTS}"
    RESOURCES "${MY_SLICER_RESOURCES}"
    DESTINATION_DIR "${destination}"
    INSTALL_DIR "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}"
    ${no_install_subdir}
    )
  if(BUILD_TESTING AND MY_SLICER_WITH_GENERIC_TESTS)
    slicer_stand_in_record(generic_tests "${MY_SLICER_NAME}")
  endif()
endfunction()

#-----------------------------------------------------------------------------
# Slicer's slicer_add_python_unittest: a test named py_<prefix><script name> that imports the
# script's module from the current binary folder or the script's folder (by default the current
# source folder). Recorded as the test name and the script the test would import.
function(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "TESTNAME_PREFIX;SCRIPT" "SLICER_ARGS" ${ARGN})
  get_filename_component(test_name "${MY_SCRIPT}" NAME_WE)
  get_filename_component(script_dir "${MY_SCRIPT}" PATH)
  if("${script_dir}" STREQUAL "")
    set(script_dir "${CMAKE_CURRENT_SOURCE_DIR}")
  endif()
  slicer_stand_in_record(python_unittest "py_${MY_TESTNAME_PREFIX}${test_name}" "${script_dir}/${test_name}.py")
endfunction()
