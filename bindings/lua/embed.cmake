# cmake -DIN=file.lua -DOUT=file.h -DNAME=symbol -P embed.cmake
# Writes OUT holding `static const char NAME[]`, the bytes of IN and a NUL:
# the Lua parts of the module are compiled into tether.so, which stays one
# file (no Lua path to set up).
file(READ "${IN}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" bytes "${bytes}")
file(WRITE "${OUT}.tmp" "/* Generated from ${IN} by embed.cmake: do not edit. */\nstatic const char ${NAME}[] = {\n${bytes}0x00};\n")
file(RENAME "${OUT}.tmp" "${OUT}")
