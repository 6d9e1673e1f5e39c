# The Rust and Go toolchains of plugins/rustworkers, plugins/goworkers and
# tests/lang, found as Debian installs them (/usr/bin/cargo, /usr/bin/rustc,
# /usr/bin/go: packages cargo, rustc, golang-go; scripts/deps.sh installs
# them) before anything else on PATH, so that a rustup toolchain in
# ~/.cargo/bin does not stand in for the one a fresh Debian machine has.
# Set TETHER_CARGO, TETHER_RUSTC or TETHER_GO to choose others.  A missing
# toolchain is not an error: the plugins are not built and their tests say
# why they skip (TETHER_RUST_MISSING, TETHER_GO_MISSING).
get_property(_done GLOBAL PROPERTY TETHER_TOOLCHAINS_FOUND)
if(_done)
  return()
endif()
set_property(GLOBAL PROPERTY TETHER_TOOLCHAINS_FOUND 1)

foreach(_tool cargo rustc rustdoc go)
  string(TOUPPER ${_tool} _var)
  find_program(TETHER_${_var} NAMES ${_tool} PATHS /usr/bin /usr/lib/go-1.19/bin
               NO_DEFAULT_PATH DOC "the ${_tool} the Rust/Go plugins and tests use")
  find_program(TETHER_${_var} NAMES ${_tool})
endforeach()

set(TETHER_RUST_MISSING "")
if(NOT EXISTS "${TETHER_CARGO}" OR NOT EXISTS "${TETHER_RUSTC}")
  set(TETHER_RUST_MISSING
      "no Rust toolchain (cargo and rustc; on Debian: apt-get install cargo rustc, or scripts/deps.sh)")
  message(STATUS "tether: ${TETHER_RUST_MISSING}: the Rust binding's and plugin's tests will skip")
endif()
set(TETHER_GO_MISSING "")
if(NOT EXISTS "${TETHER_GO}")
  set(TETHER_GO_MISSING
      "no Go toolchain (go; on Debian: apt-get install golang-go, or scripts/deps.sh)")
  message(STATUS "tether: ${TETHER_GO_MISSING}: the Go plugin's tests will skip")
endif()
set(TETHER_RUST_MISSING "${TETHER_RUST_MISSING}" CACHE INTERNAL "")
set(TETHER_GO_MISSING "${TETHER_GO_MISSING}" CACHE INTERNAL "")
