# tether_add_plugin(<name> SOURCES <src>... [LINK_TETHER]
#                   [INCLUDE_DIR <dir>] [DEFINES <def>...] [OUTPUT_DIR <dir>])
#
# Builds a tether plugin the way docs/plugins.md asks plugin authors to:
# a MODULE named <name>.so, compiled with hidden visibility so that only the
# functions marked TETHER_PLUGIN_EXPORT are exported, and linked with
# -z defs so that an unresolved symbol is a link error, not a dlopen error.
# By default a plugin sees only the public headers and reaches the library
# through the host API table its init receives; LINK_TETHER links
# libtether instead.  INCLUDE_DIR replaces abi/include (the version-skew
# fixtures build against edited copies of the headers).
function(tether_add_plugin name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "LINK_TETHER"
                        "INCLUDE_DIR;OUTPUT_DIR" "SOURCES;DEFINES")
  if(NOT arg_INCLUDE_DIR)
    set(arg_INCLUDE_DIR ${PROJECT_SOURCE_DIR}/abi/include)
  endif()
  if(NOT arg_OUTPUT_DIR)
    set(arg_OUTPUT_DIR ${PROJECT_BINARY_DIR}/plugins)
  endif()
  add_library(${name} MODULE ${arg_SOURCES})
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    C_VISIBILITY_PRESET hidden
    LIBRARY_OUTPUT_DIRECTORY ${arg_OUTPUT_DIR})
  target_include_directories(${name} BEFORE PRIVATE ${arg_INCLUDE_DIR})
  target_compile_definitions(${name} PRIVATE _GNU_SOURCE ${arg_DEFINES})
  target_link_libraries(${name} PRIVATE tether_warnings)
  target_link_libraries(${name} PRIVATE Threads::Threads)
  if(arg_LINK_TETHER)
    target_link_libraries(${name} PRIVATE tether::tether)
  endif()
  # clang links the sanitizer runtimes into executables only, so a
  # sanitized clang-built plugin has undefined __asan_* symbols by design.
  if(NOT (TETHER_SANITIZE AND CMAKE_C_COMPILER_ID MATCHES "Clang"))
    target_link_options(${name} PRIVATE "LINKER:-z,defs")
  endif()
endfunction()
