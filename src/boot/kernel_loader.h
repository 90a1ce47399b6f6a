// Kernel loaders: put a kernel image into guest memory and say how to enter
// it. Boot configuration (zero page, PVH start_info) is separate
// (boot_config.h): a loader knows the image format, a configurator knows the
// boot protocol's data structures.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "memory/guest_memory.h"

namespace rz::boot {

enum class EntryMode {
  Linux64,  // bzImage 64-bit entry: long mode, identity paging, RSI = zero page
  Linux32,  // bzImage 32-bit entry: flat protected mode, ESI = zero page
  Pvh32,    // PVH: flat protected mode, paging off, EBX = hvm_start_info
};

struct LoadedKernel {
  EntryMode mode = EntryMode::Linux64;
  uint64_t entry = 0;        // guest physical entry point
  uint64_t load_addr = 0;    // where the kernel's image starts
  uint64_t load_end = 0;     // first byte after what the kernel may use (init_size)
  // bzImage only: the setup header as found in the file (bytes 0x1f1..end of
  // header), to copy into the zero page, and the fields a loader needs.
  std::vector<uint8_t> setup_header;
  uint16_t protocol = 0;
  uint32_t initrd_addr_max = 0;
  uint32_t cmdline_size = 0;
};

// Formats recognised by content, not by name. Throws UsageError naming the
// problem for anything it cannot boot: too small, not a bzImage or ELF, boot
// protocol older than 2.06, no usable entry point, or no room in `mem`.
LoadedKernel load_kernel(const memory::GuestMemory& mem, const std::vector<uint8_t>& image);
LoadedKernel load_bzimage(const memory::GuestMemory& mem, const std::vector<uint8_t>& image);
LoadedKernel load_elf_pvh(const memory::GuestMemory& mem, const std::vector<uint8_t>& image);

// Throws UsageError("<what> <path>: ...") unless path is a readable regular file.
void check_readable(const std::string& path, const std::string& what);

// Reads a whole file; throws UsageError("<what> <path>: ...") on failure.
std::vector<uint8_t> read_file(const std::string& path, const std::string& what,
                               uint64_t max_size = uint64_t(4) << 30);

}  // namespace rz::boot
