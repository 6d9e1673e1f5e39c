# cmake -DNM=<nm> -DLIB=<plugin.so> -DLIST=<exports.txt> -P TetherCheckExports.cmake
# (installed with the CMake package; tether_add_plugin runs it after each build)
#
# Fails unless the plugin's dynamic symbol table defines exactly the names in
# its export list: hidden visibility must keep every other function inside.
execute_process(COMMAND ${NM} -D --defined-only ${LIB}
                OUTPUT_VARIABLE _out RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "${NM} could not read ${LIB}")
endif()
string(REGEX MATCHALL "[^\n]+" _lines "${_out}")
set(_have)
foreach(_line IN LISTS _lines)
  if(_line MATCHES "^[0-9a-fA-F]* +[A-Za-z] +([^ @]+)")
    list(APPEND _have ${CMAKE_MATCH_1})
  endif()
endforeach()
# Made by the linker, not by the plugin's code.
list(REMOVE_ITEM _have _init _fini _edata _end __bss_start)

file(STRINGS ${LIST} _want REGEX "^[A-Za-z_]")
list(SORT _have)
list(SORT _want)
if(NOT _have STREQUAL _want)
  set(_extra ${_have})
  list(REMOVE_ITEM _extra ${_want})
  set(_missing ${_want})
  if(_have)
    list(REMOVE_ITEM _missing ${_have})
  endif()
  message(FATAL_ERROR "${LIB} does not export what ${LIST} lists.\n"
          "  exported but not listed: ${_extra}\n"
          "  listed but not exported: ${_missing}")
endif()
message(STATUS "${LIB}: exports ${_have}")
