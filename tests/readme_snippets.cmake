# oq_write_readme_snippets(<README> <output .cpp>): a C++ file holding every
# ```cpp block of <README>, each in its own scope inside main(), with the
# blocks' #include lines moved to the top of the file. The file is rewritten
# only when its content changes (no rebuild otherwise). Fails the configure
# step when the README holds no C++ block (a renamed fence would otherwise
# test nothing). A block ends at its first backtick: keep backticks out of
# the README's C++ (a block cut short fails to compile, it is not skipped).
function(oq_write_readme_snippets readme output)
  file(READ "${readme}" text)
  # CMake lists are ';'-separated and C++ is full of ';': hide them first.
  string(REPLACE ";" "@OQ_SEMICOLON@" text "${text}")
  string(REGEX MATCHALL "```cpp\n[^`]*```" blocks "${text}")
  list(LENGTH blocks count)
  if(count EQUAL 0)
    message(FATAL_ERROR "oq_write_readme_snippets: ${readme} has no ```cpp block")
  endif()
  set(includes "")
  set(body "")
  set(index 0)
  foreach(block IN LISTS blocks)
    math(EXPR index "${index} + 1")
    string(REGEX REPLACE "^```cpp\n" "" block "${block}")
    string(REGEX REPLACE "```$" "" block "${block}")
    string(REGEX MATCHALL "#include <[^>\n]+>" found "${block}")
    list(APPEND includes ${found})
    string(REGEX REPLACE "#include <[^>\n]+>\n" "" block "${block}")
    string(APPEND body "  {  // README.md, C++ block ${index}\n${block}  }\n")
  endforeach()
  list(REMOVE_DUPLICATES includes)
  set(out "// Generated from README.md by tests/readme_snippets.cmake: do not edit.\n")
  string(APPEND out "// Each ```cpp block of the README, compiled and run as written.\n")
  foreach(line IN LISTS includes)
    string(APPEND out "${line}\n")
  endforeach()
  string(APPEND out "\nint main() {\n${body}  return 0;\n}\n")
  string(REPLACE "@OQ_SEMICOLON@" ";" out "${out}")
  file(WRITE "${output}.new" "${out}")
  file(COPY_FILE "${output}.new" "${output}" ONLY_IF_DIFFERENT)
  file(REMOVE "${output}.new")
endfunction()
