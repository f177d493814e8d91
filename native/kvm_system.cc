// ioctls on the /dev/kvm fd: API version, capabilities, what the host supports, VM creation.
#include <linux/kvm.h>

#include "ioctl.h"

namespace tsvmm {
namespace {

constexpr size_t kCpuid2Header = SIZE_THROUGH(struct kvm_cpuid2, padding);
constexpr size_t kMsrListHeader = SIZE_THROUGH(struct kvm_msr_list, nmsrs);
static_assert(kCpuid2Header == 8 && sizeof(struct kvm_cpuid_entry2) == 40);
static_assert(kMsrListHeader == 4);

IOCTL_NOARG(kvmGetApiVersion, KVM_GET_API_VERSION)
IOCTL_VALUE(kvmCheckExtension, KVM_CHECK_EXTENSION, cap)
IOCTL_NOARG(kvmGetVcpuMmapSize, KVM_GET_VCPU_MMAP_SIZE)
IOCTL_COUNTED(kvmGetSupportedCpuid, KVM_GET_SUPPORTED_CPUID, kCpuid2Header,
              sizeof(struct kvm_cpuid_entry2), kHeaderCount)
IOCTL_COUNTED(kvmGetMsrIndexList, KVM_GET_MSR_INDEX_LIST, kMsrListHeader, sizeof(__u32),
              kHeaderCount)
IOCTL_VALUE(kvmCreateVm, KVM_CREATE_VM, type)

}  // namespace

void RegisterKvmSystem(Napi::Env env, Napi::Object exports) {
  EXPORT_FUNCTION(env, exports, kvmGetApiVersion);
  EXPORT_FUNCTION(env, exports, kvmCheckExtension);
  EXPORT_FUNCTION(env, exports, kvmGetVcpuMmapSize);
  EXPORT_FUNCTION(env, exports, kvmGetSupportedCpuid);
  EXPORT_FUNCTION(env, exports, kvmGetMsrIndexList);
  EXPORT_FUNCTION(env, exports, kvmCreateVm);
}

}  // namespace tsvmm
