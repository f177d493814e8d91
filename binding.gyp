{
  "targets": [
    {
      "target_name": "tsvmm",
      "sources": [
        "native/addon.cc",
        "native/args.cc",
        "native/ioctl.cc",
        "native/fast-call.cc",
        "native/fds.cc",
        "native/fd-poll.cc",
        "native/sockets.cc",
        "native/memory.cc",
        "native/bitmap.cc",
        "native/pages.cc",
        "native/threads.cc",
        "native/kvm_system.cc",
        "native/kvm_vm.cc",
        "native/kvm_vcpu.cc",
        "native/tun.cc",
        "native/bench.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_DISABLE_CPP_EXCEPTIONS"
      ],
      "cflags": ["-fvisibility=hidden", "-Wall", "-Wextra"],
      "cflags_cc!": ["-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["-std=c++17", "-fno-exceptions", "-fno-rtti"]
    }
  ]
}
