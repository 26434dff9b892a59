# Stand-in for Slicer's SlicerExtensionGenerateConfig.cmake (writes <Extension>Config.cmake for
# extensions that depend on this one): recorded only.
slicer_stand_in_record(generate_config "${EXTENSION_NAME}")
