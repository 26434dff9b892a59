# Stand-in for Slicer's SlicerExtensionCPack.cmake: the same checks before packaging, then a
# record of the metadata it would write into the generated <Extension>.s4ext (a list value written
# space-separated, as Slicer writes it).

if("${EXTENSION_NAME}" STREQUAL "")
  message(FATAL_ERROR "EXTENSION_NAME is either NOT defined or empty")
endif()
if(NOT "${EXTENSION_NAME}" STREQUAL "${PROJECT_NAME}")
  # Slicer skips packaging with a status message: an extension with no package is an error here.
  message(FATAL_ERROR "EXTENSION_NAME ${EXTENSION_NAME} differs from PROJECT_NAME ${PROJECT_NAME}: Slicer would skip packaging")
endif()
foreach(name README_FILE LICENSE_FILE)
  if(NOT EXISTS "${EXTENSION_${name}}")
    message(FATAL_ERROR "EXTENSION_${name} points to an inexistent file: ${EXTENSION_${name}}")
  endif()
endforeach()

foreach(name NAME CATEGORY ICONURL STATUS HOMEPAGE CONTRIBUTORS DESCRIPTION SCREENSHOTURLS DEPENDS
    RECOMMENDS ENABLED DICOM_SUPPORT_RULE KEYWORDS BUILD_SUBDIRECTORY TIER README_FILE LICENSE_FILE)
  string(REPLACE ";" " " value "${EXTENSION_${name}}")
  slicer_stand_in_record(extension "${name}" "${value}")
endforeach()
slicer_stand_in_record(cpack "${EXTENSION_NAME}")
