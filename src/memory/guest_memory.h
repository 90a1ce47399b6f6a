// Guest physical memory: anonymous host mappings placed at guest physical
// addresses, and bounds-checked access by guest address.
//
// Every address or length that came from the guest must go through this
// class's checked accessors: they fail (return false / nullopt) instead of
// touching host memory outside a region.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <type_traits>
#include <vector>

namespace rz::memory {

struct Region {
  uint64_t gpa = 0;     // guest physical start
  uint64_t size = 0;    // bytes
  uint8_t* host = nullptr;
};

class GuestMemory {
 public:
  // Maps `ram_bytes` of guest RAM split around the 32-bit MMIO hole: up to
  // 3 GiB at GPA 0, the rest at 4 GiB. Throws rz::Error if the host cannot
  // map it (the message says how much was asked for).
  static GuestMemory create_x86(uint64_t ram_bytes);
  // One region per (gpa, size) pair, in order; for tests and other layouts.
  static GuestMemory create(const std::vector<std::pair<uint64_t, uint64_t>>& layout);

  GuestMemory() = default;
  GuestMemory(GuestMemory&&) noexcept;
  GuestMemory& operator=(GuestMemory&&) noexcept;
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;
  ~GuestMemory();

  const std::vector<Region>& regions() const { return regions_; }
  uint64_t total_size() const;

  // Host pointer for [gpa, gpa+len) if the whole range lies in one region.
  // Inline: the virtqueue hot path calls it for every ring field and buffer.
  uint8_t* host_ptr(uint64_t gpa, uint64_t len) const {
    for (const Region& r : regions_) {
      if (gpa >= r.gpa && gpa - r.gpa < r.size) {
        const uint64_t off = gpa - r.gpa;
        return len <= r.size - off ? r.host + off : nullptr;
      }
    }
    return nullptr;
  }
  std::optional<std::span<uint8_t>> slice(uint64_t gpa, uint64_t len) const {
    uint8_t* p = host_ptr(gpa, len);
    if (!p) return std::nullopt;
    return std::span<uint8_t>(p, len);
  }
  bool contains(uint64_t gpa, uint64_t len) const { return host_ptr(gpa, len) != nullptr || len == 0; }

  bool read(uint64_t gpa, void* dst, uint64_t len) const {
    if (len == 0) return true;
    const uint8_t* p = host_ptr(gpa, len);
    if (!p) return false;
    std::memcpy(dst, p, len);
    return true;
  }
  bool write(uint64_t gpa, const void* src, uint64_t len) const {
    if (len == 0) return true;
    uint8_t* p = host_ptr(gpa, len);
    if (!p) return false;
    std::memcpy(p, src, len);
    return true;
  }

  template <typename T>
  std::optional<T> read_obj(uint64_t gpa) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T v;
    if (!read(gpa, &v, sizeof(T))) return std::nullopt;
    return v;
  }
  template <typename T>
  bool write_obj(uint64_t gpa, const T& v) const {
    static_assert(std::is_trivially_copyable_v<T>);
    return write(gpa, &v, sizeof(T));
  }

 private:
  void unmap_all();
  std::vector<Region> regions_;
};

}  // namespace rz::memory
