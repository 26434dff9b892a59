# A stand-in for a Slicer build tree, found by find_package(Slicer) with -DSlicer_DIR pointing
# here. Testing/packaging/test_extension_packaging.py configures, builds and installs the extension against
# it. It defines what the extension's CMake files use from Slicer, handling arguments and placing
# files the way the real code does (Slicer: CMake/SlicerMacroBuildScriptedModule.cmake,
# SlicerMacroPythonTesting.cmake, UseSlicer.cmake.in, SlicerExtensionCPack.cmake; CTK:
# CMake/ctkMacroCompilePythonScript.cmake), and records each call, one tab-separated line per
# record, in <build>/slicer-stand-in/calls.tsv. It copies and installs files, nothing more: no
# byte-compiling, no launcher, no package.

set(Slicer_FOUND TRUE)
set(Slicer_VERSION_MAJOR 5)
set(Slicer_VERSION_MINOR 8)
set(Slicer_USE_PYTHONQT ON)
# Same layout as a real Slicer 5.8 build tree on Linux.
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "lib/Slicer-5.8/qt-scripted-modules")

set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/SlicerExtensionGenerateConfig.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/SlicerExtensionCPack.cmake")

set(SLICER_STAND_IN_RECORD "${CMAKE_BINARY_DIR}/slicer-stand-in/calls.tsv")
file(WRITE "${SLICER_STAND_IN_RECORD}" "")  # a fresh record on every configure

# Appends one record: its kind, then one field per further argument (empty ones included).
function(slicer_stand_in_record kind)
  set(line "${kind}")
  foreach(field IN LISTS ARGN)
    set(line "${line}\t${field}")
  endforeach()
  file(APPEND "${SLICER_STAND_IN_RECORD}" "${line}\n")
endfunction()
