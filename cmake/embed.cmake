# Turns a file into a C++ source that holds its bytes as crunch::NAME, a std::string_view:
#   cmake -DINPUT=api/openapi.json -DOUTPUT=openapi_document.cpp -DNAME=openapi_document -P embed.cmake
# No #embed in GCC 12, and a raw string literal would stop at the file's first )".
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" digits)
math(EXPR size "${digits} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE "${OUTPUT}.tmp" "// Generated from ${INPUT} by cmake/embed.cmake: do not edit.\n"
     "#include \"server/embedded.hpp\"\n\n"
     "namespace crunch {\nnamespace {\nconst unsigned char bytes[] = {${bytes}};\n}  // namespace\n"
     "const std::string_view ${NAME}{reinterpret_cast<const char*>(bytes), ${size}};\n}  // namespace crunch\n")
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")
