// Guest RAM host mappings keep the guest address's offset within 2 MiB, so
// that KVM can map them with 2 MiB pages.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "memory/guest_memory.h"
#include "x86/layout.h"

using rz::memory::GuestMemory;
using rz::x86::GiB;
using rz::x86::MiB;

namespace {

constexpr uint64_t k2M = 2 * MiB;

uint64_t host_offset(const rz::memory::Region& r) {
  return reinterpret_cast<uintptr_t>(r.host) % k2M;
}

TEST(GuestMemoryAlign, X86RegionsAre2MiBAligned) {
  // Several sizes, including one that is not a multiple of 2 MiB, and one
  // with RAM above 4 GiB (two regions).
  for (uint64_t size : {16 * MiB, 64 * MiB + 4096, 512 * MiB, 3 * GiB + 64 * MiB}) {
    auto mem = GuestMemory::create_x86(size);
    ASSERT_FALSE(mem.regions().empty());
    for (const auto& r : mem.regions()) {
      EXPECT_EQ(host_offset(r), r.gpa % k2M) << "size " << size << " gpa " << r.gpa;
    }
    EXPECT_EQ(mem.total_size(), size);
  }
}

TEST(GuestMemoryAlign, KeepsAnOddGuestOffset) {
  // A region whose guest address is not 2 MiB-aligned keeps that offset.
  auto mem = GuestMemory::create({{0x1000, 8 * MiB}, {0x300000, 4 * MiB}});
  ASSERT_EQ(mem.regions().size(), 2u);
  EXPECT_EQ(host_offset(mem.regions()[0]), 0x1000u);
  EXPECT_EQ(host_offset(mem.regions()[1]), 0x100000u);
}

TEST(GuestMemoryAlign, WholeRegionIsUsable) {
  // The trimmed mapping covers the region exactly: first and last bytes are
  // writable and read back through the checked accessors.
  auto mem = GuestMemory::create_x86(6 * MiB + 4096);
  const auto& r = mem.regions().at(0);
  r.host[0] = 0x5a;
  r.host[r.size - 1] = 0xa5;
  uint8_t a = 0, b = 0;
  ASSERT_TRUE(mem.read(0, &a, 1));
  ASSERT_TRUE(mem.read(r.size - 1, &b, 1));
  EXPECT_EQ(a, 0x5a);
  EXPECT_EQ(b, 0xa5);
  EXPECT_FALSE(mem.read(r.size, &a, 1));
}

}  // namespace
