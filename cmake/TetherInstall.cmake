# TetherInstall.cmake - installs libtether for consumers: the headers, the
# library (libtether.so.1 with its links), the CMake package
# (tetherConfig.cmake, tetherConfigVersion.cmake, tetherTargets.cmake, giving
# tether::tether) and tether.pc, all in the install component `tether`
# (`cmake --install <build> --component tether` installs only these).
# Included from core/CMakeLists.txt once the `tether` target exists.
include(CMakePackageConfigHelpers)

set(TETHER_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/tether")
set(TETHER_PKGCONFIG_DIR "${CMAKE_INSTALL_LIBDIR}/pkgconfig")

# tether::headers: the public headers alone, for plugins that reach the
# library through the host table.
add_library(tether_headers INTERFACE)
add_library(tether::headers ALIAS tether_headers)
target_include_directories(tether_headers INTERFACE
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/abi/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
set_target_properties(tether_headers PROPERTIES EXPORT_NAME headers)
install(TARGETS tether_headers EXPORT tetherTargets COMPONENT tether)

install(TARGETS tether EXPORT tetherTargets
  LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT tether
  INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
install(DIRECTORY "${PROJECT_SOURCE_DIR}/abi/include/tether"
  DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}" COMPONENT tether
  FILES_MATCHING PATTERN "*.h" PATTERN "*.hpp")
# The ABI as data (docs/abi.md, "The ABI as data"), for bindings and tools.
install(FILES "${PROJECT_SOURCE_DIR}/abi/tether-abi.json"
  DESTINATION "${CMAKE_INSTALL_DATADIR}/tether" COMPONENT tether)
install(EXPORT tetherTargets
  NAMESPACE tether::
  DESTINATION "${TETHER_CMAKE_DIR}" COMPONENT tether)

configure_package_config_file(
  "${PROJECT_SOURCE_DIR}/cmake/tetherConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/tetherConfig.cmake"
  INSTALL_DESTINATION "${TETHER_CMAKE_DIR}")
# A consumer asking for 1.x gets any 1.y >= x: one major, one ABI.
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/tetherConfigVersion.cmake"
  COMPATIBILITY SameMajorVersion)
install(FILES
  "${PROJECT_BINARY_DIR}/tetherConfig.cmake"
  "${PROJECT_BINARY_DIR}/tetherConfigVersion.cmake"
  "${PROJECT_SOURCE_DIR}/cmake/TetherAddPlugin.cmake"
  "${PROJECT_SOURCE_DIR}/cmake/TetherCheckExports.cmake"
  DESTINATION "${TETHER_CMAKE_DIR}" COMPONENT tether)

# tether.pc locates the prefix from its own directory (${pcfiledir}), so an
# install with `cmake --install --prefix` elsewhere is still found right.
# A distribution package (debian/rules) turns that off: its prefix is
# fixed, and pkg-config drops -I/usr/include and -L/usr/lib/<triplet> only
# when they are spelled so, not as .../pkgconfig/../../../include.
option(TETHER_PC_RELOCATABLE
  "tether.pc finds the prefix relative to itself (off: the install prefix, absolute)" ON)
if(TETHER_PC_RELOCATABLE)
  file(RELATIVE_PATH TETHER_PC_PREFIX
    "${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig" "${CMAKE_INSTALL_PREFIX}")
  string(REGEX REPLACE "/$" "" TETHER_PC_PREFIX "\${pcfiledir}/${TETHER_PC_PREFIX}")
else()
  set(TETHER_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
endif()
foreach(_dir INCLUDEDIR LIBDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${_dir}}")
    set(TETHER_PC_${_dir} "${CMAKE_INSTALL_${_dir}}")
  else()
    set(TETHER_PC_${_dir} "\${prefix}/${CMAKE_INSTALL_${_dir}}")
  endif()
endforeach()
configure_file("${PROJECT_SOURCE_DIR}/cmake/tether.pc.in"
  "${PROJECT_BINARY_DIR}/tether.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/tether.pc"
  DESTINATION "${TETHER_PKGCONFIG_DIR}" COMPONENT tether)
