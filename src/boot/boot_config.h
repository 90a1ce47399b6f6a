// Boot configurators: the data structures a kernel reads at entry.
// Linux boot protocol: the zero page (struct boot_params). PVH: hvm_start_info.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "boot/e820.h"
#include "boot/kernel_loader.h"
#include "memory/guest_memory.h"

namespace rz::boot {

struct BootInputs {
  std::string cmdline;
  uint64_t initrd_addr = 0;   // 0: no initrd
  uint64_t initrd_size = 0;
  uint64_t rsdp_addr = 0;
  std::vector<E820Entry> e820;
};

// Copies the initrd into guest memory at the highest page-aligned address
// the kernel accepts (below initrd_addr_max and the end of low RAM, above the
// kernel). Returns its address; throws UsageError if it does not fit.
uint64_t place_initrd(const memory::GuestMemory& mem, const LoadedKernel& k,
                      const std::vector<uint8_t>& initrd);

// Writes the command line at x86::kCmdlineAddr; throws UsageError if it is
// longer than the kernel accepts.
void write_cmdline(const memory::GuestMemory& mem, const std::string& cmdline, uint32_t max_len);

// Writes struct boot_params at x86::kZeroPageAddr for a bzImage.
void write_zero_page(const memory::GuestMemory& mem, const LoadedKernel& k, const BootInputs& in);

// Writes hvm_start_info (+ module list and memory map) at x86::kPvhStartInfoAddr.
void write_pvh_start_info(const memory::GuestMemory& mem, const BootInputs& in);

// boot_params / start_info offsets, exposed for tests.
namespace zp {
inline constexpr size_t kAcpiRsdpAddr = 0x070;
inline constexpr size_t kExtRamdiskImage = 0x0c0;
inline constexpr size_t kExtRamdiskSize = 0x0c4;
inline constexpr size_t kExtCmdLinePtr = 0x0c8;
inline constexpr size_t kE820Entries = 0x1e8;
inline constexpr size_t kSetupHeader = 0x1f1;
inline constexpr size_t kTypeOfLoader = 0x210;
inline constexpr size_t kLoadflags = 0x211;
inline constexpr size_t kRamdiskImage = 0x218;
inline constexpr size_t kRamdiskSize = 0x21c;
inline constexpr size_t kCmdLinePtr = 0x228;
inline constexpr size_t kE820Table = 0x2d0;
inline constexpr size_t kE820Max = 128;
inline constexpr size_t kSize = 4096;
}  // namespace zp

namespace pvh {
inline constexpr uint32_t kMagic = 0x336ec578;
inline constexpr uint64_t kModlistAddr = 0x6040;   // after the 56-byte start_info
inline constexpr uint64_t kMemmapAddr = 0x6080;
inline constexpr size_t kMemmapMax = 128;
}  // namespace pvh

}  // namespace rz::boot
