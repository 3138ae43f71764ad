# Finds the llama.cpp build that bitnet compiles and links against.
#
# Order of precedence:
#   1. LLAMA_CPP_SOURCE_DIR (CMake variable or environment): a llama.cpp source checkout,
#      built here as a subproject (shared libraries).
#   2. LLAMA_CPP_PREFIX (CMake variable or environment): an install prefix holding
#      include/llama.h and lib/cmake/llama.
#   3. The site-packages folder of the pinned llama-cpp-python wheel in the build environment.
set(BITNET_LLAMA_CPP_PIN "llama-cpp-python==0.3.36")

if(NOT LLAMA_CPP_SOURCE_DIR AND DEFINED ENV{LLAMA_CPP_SOURCE_DIR})
  set(LLAMA_CPP_SOURCE_DIR "$ENV{LLAMA_CPP_SOURCE_DIR}")
endif()
if(NOT LLAMA_CPP_PREFIX AND DEFINED ENV{LLAMA_CPP_PREFIX})
  set(LLAMA_CPP_PREFIX "$ENV{LLAMA_CPP_PREFIX}")
endif()

if(LLAMA_CPP_SOURCE_DIR)
  message(STATUS "bitnet: building llama.cpp from source tree ${LLAMA_CPP_SOURCE_DIR}")
  set(BUILD_SHARED_LIBS ON CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_TESTS OFF CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_EXAMPLES OFF CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_TOOLS OFF CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_SERVER OFF CACHE BOOL "" FORCE)
  set(LLAMA_CURL OFF CACHE BOOL "" FORCE)
  add_subdirectory("${LLAMA_CPP_SOURCE_DIR}" "${CMAKE_BINARY_DIR}/llama.cpp" EXCLUDE_FROM_ALL)
  # The libraries are installed side by side in <site-packages>/lib: each must find the others
  # there ($ORIGIN), as the wheel's copies do; without it `import bitnet` fails with
  # "libggml.so.0: cannot open shared object file" unless LD_LIBRARY_PATH is set.
  if(APPLE)
    set_target_properties(llama ggml ggml-base ggml-cpu PROPERTIES INSTALL_RPATH "@loader_path")
  else()
    set_target_properties(llama ggml ggml-base ggml-cpu PROPERTIES INSTALL_RPATH "$ORIGIN")
  endif()
  install(TARGETS llama ggml ggml-base ggml-cpu LIBRARY DESTINATION lib)
  set(BITNET_LLAMA_CPP_PIN "source:${LLAMA_CPP_SOURCE_DIR}")
  set(BITNET_LLAMA_LIBRARIES llama ggml ggml-base ggml-cpu)
  return()
endif()

if(NOT LLAMA_CPP_PREFIX)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c
      "import importlib.util, pathlib; s = importlib.util.find_spec('llama_cpp'); print(pathlib.Path(s.origin).parent.parent if s else '')"
    OUTPUT_VARIABLE LLAMA_CPP_PREFIX
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT LLAMA_CPP_PREFIX)
    message(FATAL_ERROR
      "bitnet: llama-cpp-python is not installed in the build environment. Install "
      "'${BITNET_LLAMA_CPP_PIN}' (pip does this for 'pip install .'), or set LLAMA_CPP_PREFIX "
      "to a llama.cpp install prefix, or LLAMA_CPP_SOURCE_DIR to a llama.cpp source tree.")
  endif()
endif()

find_package(llama CONFIG REQUIRED PATHS "${LLAMA_CPP_PREFIX}" NO_DEFAULT_PATH)
find_package(ggml CONFIG REQUIRED PATHS "${LLAMA_CPP_PREFIX}" NO_DEFAULT_PATH)
set(BITNET_LLAMA_LIBRARIES llama ggml::ggml ggml::ggml-base ggml::ggml-cpu)
message(STATUS "bitnet: using llama.cpp from ${LLAMA_CPP_PREFIX} (${llama_VERSION})")
