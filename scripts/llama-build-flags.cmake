# Included by scripts/ensure-llama-server.sh as CMAKE_PROJECT_INCLUDE when it builds llama-server for the tests.
# Everything but ggml (the tensor math) is compiled without optimisation: the server's C++ (its HTTP stack, the
# chat parsers, the multimodal helpers) is most of the compile time and none of the inference time. Measured here
# on the same 110 MB test model: 93 tokens/s against 100 fully optimised, for 13.2 CPU-minutes of build against
# 22.6. The cache key (the build folder's name) includes this file's hash: a change here rebuilds.
get_property(_gw_deferred GLOBAL PROPERTY GW_UNOPTIMISED_DEFERRED)
if(NOT _gw_deferred AND CMAKE_CURRENT_SOURCE_DIR STREQUAL CMAKE_SOURCE_DIR)
  set_property(GLOBAL PROPERTY GW_UNOPTIMISED_DEFERRED TRUE)
  function(_gw_unoptimise dir)
    get_property(targets DIRECTORY "${dir}" PROPERTY BUILDSYSTEM_TARGETS)
    foreach(target IN LISTS targets)
      get_target_property(kind ${target} TYPE)
      if(NOT target MATCHES "^ggml" AND kind MATCHES "^(STATIC_LIBRARY|SHARED_LIBRARY|OBJECT_LIBRARY|EXECUTABLE)$")
        target_compile_options(${target} PRIVATE -O0)
      endif()
    endforeach()
    get_property(subdirs DIRECTORY "${dir}" PROPERTY SUBDIRECTORIES)
    foreach(sub IN LISTS subdirs)
      _gw_unoptimise("${sub}")
    endforeach()
  endfunction()
  # Deferred to the end of the top directory, when every target of every subdirectory exists.
  cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _gw_unoptimise "${CMAKE_SOURCE_DIR}")
endif()
