# crunch_kind(<name> SOURCES <files...> [TESTS <files...>] [PKG_MODULES <modules...>]
#             [TEST_PKG_MODULES <modules...>])
#
# Called by kinds/<name>/CMakeLists.txt. The kind's sources join crunch_core and its tests
# crunch_tests; the pkg-config modules it links are found here, linked into crunch_core, and found
# again by an installed crunch's package config (crunch-config.cmake). TEST_PKG_MODULES are linked
# into the tests alone (the image kind's tests call libvips, which crunch_core itself never links).
function(crunch_kind name)
  cmake_parse_arguments(PARSE_ARGV 1 kind "" "" "SOURCES;TESTS;PKG_MODULES;TEST_PKG_MODULES")
  if(NOT kind_SOURCES)
    message(FATAL_ERROR "crunch_kind(${name}): no SOURCES")
  endif()
  list(TRANSFORM kind_SOURCES PREPEND "${CMAKE_CURRENT_SOURCE_DIR}/")
  target_sources(crunch_core PRIVATE ${kind_SOURCES})
  foreach(module IN LISTS kind_PKG_MODULES kind_TEST_PKG_MODULES)
    if(NOT TARGET PkgConfig::${module})
      pkg_check_modules(${module} REQUIRED IMPORTED_TARGET GLOBAL ${module})
    endif()
  endforeach()
  foreach(module IN LISTS kind_PKG_MODULES)
    target_link_libraries(crunch_core PRIVATE PkgConfig::${module})
  endforeach()
  list(TRANSFORM kind_TESTS PREPEND "${CMAKE_CURRENT_SOURCE_DIR}/")
  set_property(GLOBAL APPEND PROPERTY crunch_kind_pkg_modules ${kind_PKG_MODULES})
  set_property(GLOBAL APPEND PROPERTY crunch_kind_test_pkg_modules ${kind_PKG_MODULES} ${kind_TEST_PKG_MODULES})
  set_property(GLOBAL APPEND PROPERTY crunch_kind_tests ${kind_TESTS})
endfunction()

# crunch_bench_tool(<name> <source>): a kind's benchmark program (bench/run.sh runs it from the
# build directory's top), built only without sanitizers: it measures speed.
function(crunch_bench_tool name source)
  if(CRUNCH_SANITIZE)
    return()
  endif()
  add_executable(${name} ${source})
  target_link_libraries(${name} PRIVATE crunch_core)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY "${PROJECT_BINARY_DIR}")
endfunction()
