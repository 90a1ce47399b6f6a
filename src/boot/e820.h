// The E820 memory map ringzero gives its guests, derived from the guest
// memory layout (x86/layout.h) so that both always agree.
#pragma once

#include <cstdint>
#include <vector>

namespace rz::boot {

enum class E820Type : uint32_t { Ram = 1, Reserved = 2, Acpi = 3, Nvs = 4 };

struct E820Entry {
  uint64_t addr;
  uint64_t size;
  E820Type type;
};

// RAM [0, EBDA), reserved EBDA..1 MiB (the BIOS area holding the ACPI tables),
// RAM from 1 MiB up to the MMIO hole, RAM above 4 GiB for the rest; plus the
// PCI ECAM window as reserved when `ecam_size` is non-zero.
std::vector<E820Entry> build_e820(uint64_t ram_bytes, uint64_t ecam_base = 0, uint64_t ecam_size = 0);

}  // namespace rz::boot
