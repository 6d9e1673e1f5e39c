# TetherAddPlugin.cmake - installed with the CMake package: find_package(tether)
# defines tether_add_plugin for plugin projects built out of tree.
#
#   tether_add_plugin(<name> SOURCES <src>... [EXPORTS <symbol>...]
#                     [LINK_TETHER])
#
# Builds <name>.so, a MODULE, the way docs/plugins.md asks:
#   - hidden visibility for C and C++, inlines hidden too;
#   - a linker version script that exports tether_plugin_entry and the
#     EXPORTS and nothing else (it also hides the std:: templates that
#     libstdc++ gives default visibility);
#   - -z defs: an undefined symbol is a link error, not a dlopen error;
#   - after each build, a check that the library exports exactly those
#     names (nm -D), so that a slip fails the build.
# The plugin sees the headers through tether::headers and reaches the
# library through the host table; LINK_TETHER links libtether as well.

set(_TETHER_ADD_PLUGIN_DIR "${CMAKE_CURRENT_LIST_DIR}")

function(tether_add_plugin name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "LINK_TETHER" "" "SOURCES;EXPORTS")
  if(NOT arg_SOURCES)
    message(FATAL_ERROR "tether_add_plugin(${name}): SOURCES is required")
  endif()
  set(_exports tether_plugin_entry ${arg_EXPORTS})
  list(REMOVE_DUPLICATES _exports)

  set(_map "${CMAKE_CURRENT_BINARY_DIR}/${name}.exports.map")
  set(_list "${CMAKE_CURRENT_BINARY_DIR}/${name}.exports.txt")
  string(JOIN ";\n    " _globals ${_exports})
  file(CONFIGURE OUTPUT "${_map}"
       CONTENT "{\n  global:\n    ${_globals};\n  local:\n    *;\n};\n")
  string(JOIN "\n" _lines ${_exports})
  file(CONFIGURE OUTPUT "${_list}" CONTENT "${_lines}\n")

  add_library(${name} MODULE ${arg_SOURCES})
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    C_VISIBILITY_PRESET hidden
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  find_package(Threads REQUIRED)
  target_link_libraries(${name} PRIVATE tether::headers Threads::Threads)
  if(arg_LINK_TETHER)
    target_link_libraries(${name} PRIVATE tether::tether)
  endif()
  target_link_options(${name} PRIVATE "LINKER:-z,defs"
                      "LINKER:--version-script=${_map}")
  set_property(TARGET ${name} APPEND PROPERTY LINK_DEPENDS "${_map}")
  add_custom_command(TARGET ${name} POST_BUILD
    COMMAND ${CMAKE_COMMAND} -DNM=${CMAKE_NM} -DLIB=$<TARGET_FILE:${name}>
            -DLIST=${_list}
            -P "${_TETHER_ADD_PLUGIN_DIR}/TetherCheckExports.cmake"
    COMMENT "Checking what ${name} exports"
    VERBATIM)
endfunction()
