# Helpers for the two extension modules. Both are built from the same binding files (csrc/bindings/);
# CK_BACKEND selects the kernel namespace they bind (ck::cpu or ck::cuda).

# commkernels_add_module(<name> <backend> <sources...>)
function(commkernels_add_module name backend)
  # NOMINSIZE: nanobind's default -Os costs ~25% on hot loops. NB_STATIC: no shared libnanobind to ship.
  nanobind_add_module(${name} NB_STATIC NOMINSIZE ${ARGN})
  target_compile_definitions(${name} PRIVATE
    CK_BACKEND=${backend}
    CK_MODULE_NAME=${name}
    CK_COMPILER="${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER_VERSION}"
    CK_BUILD_TYPE="${CMAKE_BUILD_TYPE}"
    CK_FLAGS="${CMAKE_CXX_FLAGS} ${CMAKE_CXX_FLAGS_RELEASE}")
  target_compile_options(${name} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra>
    # constexpr helpers (key layouts of each float format) are shared by host and device code
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr>)
  if(COMMKERNELS_SANITIZE)
    target_compile_definitions(${name} PRIVATE CK_SANITIZED)
    target_compile_options(${name} PRIVATE
      $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer>)
    target_link_options(${name} PRIVATE -fsanitize=address,undefined)
  endif()
  install(TARGETS ${name} LIBRARY DESTINATION commkernels)
endfunction()

# commkernels_find_cuda(<out-var>): enables CUDA and sets <out-var> ON when the CUDA module should be built.
# A macro, not a function: enable_language() must run at file scope.
macro(commkernels_find_cuda out)
  set(${out} OFF)
  if(NOT COMMKERNELS_CUDA STREQUAL "OFF")
    include(CheckLanguage)
    check_language(CUDA)
    if(CMAKE_CUDA_COMPILER)
      if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
        set(CMAKE_CUDA_ARCHITECTURES 80 90 CACHE STRING "CUDA architectures" FORCE)
      endif()
      enable_language(CUDA)
      set(CMAKE_CUDA_STANDARD 17)
      find_package(CUDAToolkit REQUIRED)
      set(${out} ON)
      message(STATUS "commkernels: building the CUDA module for architectures ${CMAKE_CUDA_ARCHITECTURES}")
    elseif(COMMKERNELS_CUDA STREQUAL "ON")
      message(FATAL_ERROR "commkernels: COMMKERNELS_CUDA=ON but no CUDA compiler was found")
    else()
      message(STATUS "commkernels: no CUDA compiler found, building the CPU module only")
    endif()
  else()
    message(STATUS "commkernels: CUDA module disabled (COMMKERNELS_CUDA=OFF)")
  endif()
endmacro()
