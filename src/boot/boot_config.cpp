#include "boot/boot_config.h"

#include <algorithm>
#include <cstring>

#include "util/error.h"
#include "x86/layout.h"

namespace rz::boot {

namespace {

constexpr uint64_t kPage = 4096;

template <typename T>
void put(std::vector<uint8_t>& b, size_t off, T v) {
  std::memcpy(b.data() + off, &v, sizeof(T));
}

uint64_t low_ram_end(const memory::GuestMemory& mem) {
  for (const auto& r : mem.regions())
    if (r.gpa == 0) return r.size;
  return 0;
}

}  // namespace

uint64_t place_initrd(const memory::GuestMemory& mem, const LoadedKernel& k,
                      const std::vector<uint8_t>& initrd) {
  const uint64_t size = initrd.size();
  uint64_t top = low_ram_end(mem);
  if (k.mode != EntryMode::Pvh32 && k.initrd_addr_max) top = std::min<uint64_t>(top, uint64_t(k.initrd_addr_max) + 1);
  const uint64_t floor = std::max<uint64_t>(k.load_end, x86::kHighMemStart);
  if (size == 0 || top < floor || top - floor < size)
    throw UsageError("initrd of " + std::to_string((size + (1 << 20) - 1) >> 20) +
                     " MiB does not fit in guest memory between the kernel and the " +
                     std::to_string(top >> 20) + " MiB limit");
  const uint64_t addr = (top - size) & ~(kPage - 1);
  if (addr < floor || !mem.write(addr, initrd.data(), size))
    throw UsageError("initrd does not fit in guest memory");
  return addr;
}

void write_cmdline(const memory::GuestMemory& mem, const std::string& cmdline, uint32_t max_len) {
  const uint64_t limit = std::min<uint64_t>(max_len, x86::kCmdlineMax - 1);
  if (cmdline.size() > limit)
    throw UsageError("kernel command line is " + std::to_string(cmdline.size()) +
                     " bytes, longer than the kernel's limit of " + std::to_string(limit));
  if (!mem.write(x86::kCmdlineAddr, cmdline.c_str(), cmdline.size() + 1))
    throw UsageError("guest memory too small for the command line");
}

void write_zero_page(const memory::GuestMemory& mem, const LoadedKernel& k, const BootInputs& in) {
  std::vector<uint8_t> zp(zp::kSize, 0);
  std::memcpy(zp.data() + zp::kSetupHeader, k.setup_header.data(),
              std::min(k.setup_header.size(), zp::kSize - zp::kSetupHeader));
  zp[zp::kTypeOfLoader] = 0xff;  // undefined boot loader id
  put<uint32_t>(zp, zp::kCmdLinePtr, static_cast<uint32_t>(x86::kCmdlineAddr));
  put<uint32_t>(zp, zp::kExtCmdLinePtr, 0);
  put<uint32_t>(zp, zp::kRamdiskImage, static_cast<uint32_t>(in.initrd_addr));
  put<uint32_t>(zp, zp::kRamdiskSize, static_cast<uint32_t>(in.initrd_size));
  put<uint32_t>(zp, zp::kExtRamdiskImage, static_cast<uint32_t>(in.initrd_addr >> 32));
  put<uint32_t>(zp, zp::kExtRamdiskSize, static_cast<uint32_t>(in.initrd_size >> 32));
  put<uint64_t>(zp, zp::kAcpiRsdpAddr, in.rsdp_addr);
  if (in.e820.size() > zp::kE820Max) throw Error("E820 map has too many entries");
  zp[zp::kE820Entries] = static_cast<uint8_t>(in.e820.size());
  for (size_t i = 0; i < in.e820.size(); ++i) {
    const size_t off = zp::kE820Table + i * 20;
    put<uint64_t>(zp, off, in.e820[i].addr);
    put<uint64_t>(zp, off + 8, in.e820[i].size);
    put<uint32_t>(zp, off + 16, static_cast<uint32_t>(in.e820[i].type));
  }
  if (!mem.write(x86::kZeroPageAddr, zp.data(), zp.size())) throw Error("guest memory too small for the zero page");
}

void write_pvh_start_info(const memory::GuestMemory& mem, const BootInputs& in) {
  // struct hvm_start_info (56 bytes), then one hvm_modlist_entry (32 bytes)
  // for the initrd, then the memory map (24-byte entries).
  std::vector<uint8_t> si(56, 0);
  put<uint32_t>(si, 0, pvh::kMagic);
  put<uint32_t>(si, 4, 1);  // version
  put<uint32_t>(si, 8, 0);  // flags
  put<uint32_t>(si, 12, in.initrd_size ? 1 : 0);
  put<uint64_t>(si, 16, in.initrd_size ? pvh::kModlistAddr : 0);
  put<uint64_t>(si, 24, x86::kCmdlineAddr);
  put<uint64_t>(si, 32, in.rsdp_addr);
  put<uint64_t>(si, 40, pvh::kMemmapAddr);
  if (in.e820.size() > pvh::kMemmapMax) throw Error("memory map has too many entries");
  put<uint32_t>(si, 48, static_cast<uint32_t>(in.e820.size()));
  mem.write(x86::kPvhStartInfoAddr, si.data(), si.size());

  std::vector<uint8_t> mod(32, 0);
  put<uint64_t>(mod, 0, in.initrd_addr);
  put<uint64_t>(mod, 8, in.initrd_size);
  mem.write(pvh::kModlistAddr, mod.data(), mod.size());

  std::vector<uint8_t> mm(in.e820.size() * 24, 0);
  for (size_t i = 0; i < in.e820.size(); ++i) {
    put<uint64_t>(mm, i * 24, in.e820[i].addr);
    put<uint64_t>(mm, i * 24 + 8, in.e820[i].size);
    put<uint32_t>(mm, i * 24 + 16, static_cast<uint32_t>(in.e820[i].type));
  }
  if (!mm.empty() && !mem.write(pvh::kMemmapAddr, mm.data(), mm.size()))
    throw Error("guest memory too small for the PVH memory map");
}

}  // namespace rz::boot
