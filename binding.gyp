{
  "targets": [
    {
      "target_name": "vera_native",
      "sources": [
        "native/addon.cc",
        "native/kernels.cc",
        "native/gemm.cc",
        "native/thread_pool.cc",
        "native/attention.cc",
        "native/vera.cc",
        "native/ragged.cc",
        "native/lora.cc",
        "native/quant.cc",
        "native/quant_avx512.cc",
        "native/gemm_avx512.cc"
      ],
      "dependencies": ["vera_gemm_avx2"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-O3", "-std=c++17", "-fno-math-errno"],
      "conditions": [
        ["target_arch=='x64'", { "defines": ["VERA_X86=1"] }]
      ]
    },
    {
      # The AVX2/FMA micro-kernel lives in its own translation unit so only it is compiled with
      # -mavx2 -mfma; the rest of the addon stays baseline x86-64 and picks it at run time.
      "target_name": "vera_gemm_avx2",
      "type": "static_library",
      "sources": ["native/gemm_avx2.cc", "native/vec_avx2.cc"],
      "cflags_cc": ["-O3", "-std=c++17", "-fPIC"],
      "conditions": [
        ["target_arch=='x64'", { "cflags_cc": ["-mavx2", "-mfma"], "defines": ["VERA_X86=1"] }]
      ]
    }
  ]
}
