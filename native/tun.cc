// The tun/tap device: TUNSETIFF on an fd of /dev/net/tun (Documentation/networking/tuntap.rst).
#include <linux/if.h>
#include <linux/if_tun.h>

#include <cstring>
#include <string>

#include "ioctl.h"

namespace tsvmm {
namespace {

// TUNSETIFF(fd, {ifr_name = name, ifr_flags = flags}); returns the interface name the kernel chose
// (the same as `name` unless it held a %d pattern).
Napi::Value tunSetIff(const Napi::CallbackInfo& info) {
  Args args(info, __func__);
  int32_t fd;
  std::string name;
  uint32_t flags;
  if (!args.Int32(0, "fd", &fd) || !args.String(1, "name", &name) || !args.Uint32(2, "flags", &flags)) {
    return {};
  }
  if (name.size() >= IFNAMSIZ) {
    Napi::RangeError::New(args.Env(), "tunSetIff: argument name must be shorter than IFNAMSIZ (16)")
        .ThrowAsJavaScriptException();
    return {};
  }
  struct ifreq ifr = {};
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  ifr.ifr_flags = static_cast<short>(flags);
  if (!IOCTL(args.Env(), fd, TUNSETIFF, &ifr)) return {};
  return Napi::String::New(args.Env(), ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ));
}

}  // namespace

void RegisterTun(Napi::Env env, Napi::Object exports) {
  EXPORT_FUNCTION(env, exports, tunSetIff);
}

}  // namespace tsvmm
