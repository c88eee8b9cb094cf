# What `cmake --install` adds beyond each folder's own install() lines: the
# CMake package (find_package(foreman) → foreman::client, foreman::c) and the
# pkg-config file of the C API. Layout: docs/install.md.
include(CMakePackageConfigHelpers)

set(FOREMAN_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/foreman)
install(EXPORT foreman-targets NAMESPACE foreman:: FILE foremanTargets.cmake
  DESTINATION ${FOREMAN_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/foremanConfig.cmake.in
  ${PROJECT_BINARY_DIR}/foremanConfig.cmake INSTALL_DESTINATION ${FOREMAN_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/foremanConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/foremanConfig.cmake ${PROJECT_BINARY_DIR}/foremanConfigVersion.cmake
  DESTINATION ${FOREMAN_CMAKE_DIR})

# foreman.pc is written when installing, so its paths are those of the
# prefix installed to (`cmake --install --prefix P` overrides the configured
# one, and pkg-config files hold absolute paths).
install(CODE "
  set(prefix \"\${CMAKE_INSTALL_PREFIX}\")
  set(FOREMAN_PC_LIBDIR \"${CMAKE_INSTALL_LIBDIR}\")
  set(FOREMAN_PC_INCLUDEDIR \"${CMAKE_INSTALL_INCLUDEDIR}\")
  set(FOREMAN_PC_VERSION \"${PROJECT_VERSION}\")
  configure_file(\"${PROJECT_SOURCE_DIR}/cmake/foreman.pc.in\" \"${PROJECT_BINARY_DIR}/foreman.pc\" @ONLY)
")
install(FILES ${PROJECT_BINARY_DIR}/foreman.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
