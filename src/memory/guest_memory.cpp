#include "memory/guest_memory.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <string>

#include "util/error.h"
#include "x86/layout.h"

namespace rz::memory {

GuestMemory GuestMemory::create_x86(uint64_t ram_bytes) {
  if (ram_bytes == 0) throw UsageError("memory size must be greater than 0");
  const uint64_t low = std::min(ram_bytes, x86::kMmioHoleStart);
  std::vector<std::pair<uint64_t, uint64_t>> layout{{0, low}};
  if (ram_bytes > low) layout.emplace_back(x86::kRamAbove4gStart, ram_bytes - low);
  return create(layout);
}

namespace {

// KVM maps guest RAM with 2 MiB pages only where the host address has the same
// offset within 2 MiB as the guest address (and the host backs it with a
// transparent huge page). Without that, every 4 KiB the guest touches costs
// its own second-level page fault: booting Debian's kernel in the nested test
// host (kernel 6.1, which does not align large mappings by itself) took about
// 25000 of them where QEMU's aligned RAM took 600. So the host mapping keeps
// the guest address's offset within 2 MiB.
constexpr uint64_t kHugePage = 2ull << 20;

void* map_ram(uint64_t gpa, uint64_t size) {
  if (size > UINT64_MAX - kHugePage) {
    errno = ENOMEM;
    return MAP_FAILED;
  }
  const uint64_t span = size + kHugePage;
  // MAP_NORESERVE: guest RAM is committed as the guest touches it, so an
  // idle VM costs only what it uses.
  void* p = mmap(nullptr, span, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return p;
  const uint64_t base = reinterpret_cast<uintptr_t>(p);
  const uint64_t want = gpa % kHugePage;
  const uint64_t start = base + ((want - base % kHugePage) + kHugePage) % kHugePage;
  if (start > base) munmap(p, start - base);
  if (base + span > start + size) munmap(reinterpret_cast<void*>(start + size), base + span - (start + size));
  return reinterpret_cast<void*>(start);
}

}  // namespace

GuestMemory GuestMemory::create(const std::vector<std::pair<uint64_t, uint64_t>>& layout) {
  GuestMemory mem;
  for (const auto& [gpa, size] : layout) {
    if (size == 0 || gpa + size < gpa) throw Error("guest memory: invalid region");
    void* p = map_ram(gpa, size);
    if (p == MAP_FAILED) {
      const int err = errno;
      throw UsageError(errno_message(
          "cannot map " + std::to_string(size >> 20) + " MiB of guest memory", err));
    }
    madvise(p, size, MADV_MERGEABLE);
    mem.regions_.push_back(Region{gpa, size, static_cast<uint8_t*>(p)});
  }
  return mem;
}

GuestMemory::GuestMemory(GuestMemory&& o) noexcept : regions_(std::move(o.regions_)) {
  o.regions_.clear();
}

GuestMemory& GuestMemory::operator=(GuestMemory&& o) noexcept {
  if (this != &o) {
    unmap_all();
    regions_ = std::move(o.regions_);
    o.regions_.clear();
  }
  return *this;
}

GuestMemory::~GuestMemory() { unmap_all(); }

void GuestMemory::unmap_all() {
  for (auto& r : regions_) munmap(r.host, r.size);
  regions_.clear();
}

uint64_t GuestMemory::total_size() const {
  uint64_t t = 0;
  for (const auto& r : regions_) t += r.size;
  return t;
}

}  // namespace rz::memory
