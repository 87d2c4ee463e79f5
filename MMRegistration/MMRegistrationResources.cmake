#-----------------------------------------------------------------------------
# The extension's shared resources (Resources/<dir> of the repository: sample case, DISA weights, networks).
#
# MMRegistrationLib.resources.resources_dir() looks for "Resources" beside the engine package, i.e. in the folder
# the engine is compiled into (build tree) or installed into (install tree). The files are therefore copied into
# the build tree at configure time (configure_file: re-copied when a source file changes) as well as installed, so
# the modules' tests under ctest and a Slicer started from the build tree find them.
#
# mmreg_add_resources(SOURCE_DIR <repository Resources folder> DIRECTORIES <dir>...
#                     BUILD_DIR <build-tree Resources folder> [INSTALL_DIR <install-tree Resources folder>])
# Hidden files (names starting with ".") are neither copied nor installed.
function(mmreg_add_resources)
  cmake_parse_arguments(MMREG "" "SOURCE_DIR;BUILD_DIR;INSTALL_DIR" "DIRECTORIES" ${ARGN})
  foreach(directory ${MMREG_DIRECTORIES})
    file(GLOB_RECURSE files RELATIVE ${MMREG_SOURCE_DIR} ${MMREG_SOURCE_DIR}/${directory}/*)
    list(FILTER files EXCLUDE REGEX "(^|/)\\.")
    if(NOT files)
      message(FATAL_ERROR "MMRegistration: no resource files in ${MMREG_SOURCE_DIR}/${directory}")
    endif()
    foreach(file ${files})
      configure_file(${MMREG_SOURCE_DIR}/${file} ${MMREG_BUILD_DIR}/${file} COPYONLY)
    endforeach()
    if(MMREG_INSTALL_DIR)
      install(
        DIRECTORY ${MMREG_SOURCE_DIR}/${directory}
        DESTINATION ${MMREG_INSTALL_DIR}
        COMPONENT RuntimeLibraries
        PATTERN ".*" EXCLUDE
        )
    endif()
  endforeach()
endfunction()
