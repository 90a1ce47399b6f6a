// Kernel loaders, boot configurators and the E820 map.
#include <gtest/gtest.h>

#include <cstring>
#include <elf.h>

#include "boot/boot_config.h"
#include "boot/e820.h"
#include "boot/kernel_loader.h"
#include "util/error.h"
#include "x86/layout.h"

using namespace rz;
using namespace rz::boot;
using rz::x86::GiB;
using rz::x86::MiB;

namespace {

template <typename T>
void put(std::vector<uint8_t>& b, size_t off, T v) {
  std::memcpy(b.data() + off, &v, sizeof(T));
}
template <typename T>
T get(const memory::GuestMemory& m, uint64_t gpa) {
  return *m.read_obj<T>(gpa);
}

// A minimal bzImage: 4 setup sectors + boot sector, then a payload.
std::vector<uint8_t> fake_bzimage(uint16_t version = 0x20f, size_t payload = 8192, bool k64 = true) {
  std::vector<uint8_t> img(5 * 512 + payload, 0);
  img[0x1f1] = 4;
  put<uint16_t>(img, 0x1fe, 0xaa55);
  img[0x201] = 0x6a;  // header ends at 0x26c
  std::memcpy(img.data() + 0x202, "HdrS", 4);
  put<uint16_t>(img, 0x206, version);
  img[0x211] = 0x01;  // LOADED_HIGH
  put<uint32_t>(img, 0x214, 0x100000);
  put<uint32_t>(img, 0x22c, 0x7fffffff);
  put<uint32_t>(img, 0x230, 0x200000);
  img[0x234] = 1;
  put<uint16_t>(img, 0x236, k64 ? 0x3 : 0);
  put<uint32_t>(img, 0x238, 2047);
  put<uint64_t>(img, 0x258, 0x1000000);
  put<uint32_t>(img, 0x260, 0x400000);
  for (size_t i = 0; i < payload; ++i) img[5 * 512 + i] = static_cast<uint8_t>(i * 7);
  return img;
}

}  // namespace

TEST(E820, SmallGuestHasLowRamReservedBiosAreaAndHighRam) {
  const auto m = build_e820(512 * MiB);
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0].addr, 0u);
  EXPECT_EQ(m[0].size, x86::kEbdaStart);
  EXPECT_EQ(m[0].type, E820Type::Ram);
  EXPECT_EQ(m[1].type, E820Type::Reserved);
  EXPECT_EQ(m[1].addr + m[1].size, x86::kHighMemStart);
  EXPECT_EQ(m[2].addr, x86::kHighMemStart);
  EXPECT_EQ(m[2].addr + m[2].size, 512 * MiB);
}

TEST(E820, LargeGuestSkipsTheMmioHole) {
  const auto m = build_e820(5 * GiB);
  uint64_t ram = 0;
  for (const auto& e : m) {
    if (e.type != E820Type::Ram) continue;
    ram += e.size;
    EXPECT_FALSE(e.addr < x86::kMmioHoleEnd && e.addr + e.size > x86::kMmioHoleStart);
  }
  EXPECT_EQ(ram, 5 * GiB - (x86::kHighMemStart - x86::kEbdaStart));
  EXPECT_EQ(m.back().addr, 4 * GiB);
  EXPECT_EQ(m.back().size, 2 * GiB);
}

TEST(E820, EcamWindowIsReserved) {
  const auto m = build_e820(512 * MiB, x86::kPciEcamBase, x86::kPciEcamSize);
  bool found = false;
  for (const auto& e : m) found |= e.addr == x86::kPciEcamBase && e.type == E820Type::Reserved;
  EXPECT_TRUE(found);
}

TEST(GuestMemory, SplitsAroundTheHoleAndChecksBounds) {
  auto mem = memory::GuestMemory::create_x86(4 * GiB);
  ASSERT_EQ(mem.regions().size(), 2u);
  EXPECT_EQ(mem.regions()[0].size, 3 * GiB);
  EXPECT_EQ(mem.regions()[1].gpa, 4 * GiB);
  EXPECT_TRUE(mem.contains(3 * GiB - 8, 8));
  EXPECT_FALSE(mem.contains(3 * GiB - 8, 9));     // straddles into the hole
  EXPECT_FALSE(mem.contains(3 * GiB + 4096, 1));  // in the hole
  EXPECT_FALSE(mem.contains(UINT64_MAX - 2, 8));  // wraps
  uint32_t v = 0x12345678;
  EXPECT_TRUE(mem.write_obj(4 * GiB + 100, v));
  EXPECT_EQ(mem.read_obj<uint32_t>(4 * GiB + 100), v);
  EXPECT_FALSE(mem.read_obj<uint32_t>(5 * GiB - 2).has_value());
  EXPECT_THROW(memory::GuestMemory::create_x86(0), UsageError);
}

TEST(BzImage, LoadsPayloadAtPrefAddressWith64BitEntry) {
  auto mem = memory::GuestMemory::create_x86(64 * MiB);
  const auto img = fake_bzimage();
  const LoadedKernel k = load_kernel(mem, img);
  EXPECT_EQ(k.mode, EntryMode::Linux64);
  EXPECT_EQ(k.load_addr, 0x1000000u);
  EXPECT_EQ(k.entry, 0x1000200u);
  EXPECT_EQ(k.load_end, 0x1400000u);
  EXPECT_EQ(k.protocol, 0x20f);
  EXPECT_EQ(k.cmdline_size, 2047u);
  EXPECT_EQ(k.initrd_addr_max, 0x7fffffffu);
  EXPECT_EQ(k.setup_header.size(), 0x26cu - 0x1f1u);
  EXPECT_EQ(get<uint8_t>(mem, 0x1000000 + 100), static_cast<uint8_t>(700));
}

TEST(BzImage, OldKernelWithout64BitEntryUses32BitEntry) {
  auto mem = memory::GuestMemory::create_x86(64 * MiB);
  const LoadedKernel k = load_kernel(mem, fake_bzimage(0x20a, 4096, false));
  EXPECT_EQ(k.mode, EntryMode::Linux32);
  EXPECT_EQ(k.entry, k.load_addr);
}

TEST(BzImage, RejectsBadImagesWithClearErrors) {
  auto mem = memory::GuestMemory::create_x86(64 * MiB);
  auto expect_msg = [&](std::vector<uint8_t> img, const char* needle) {
    try {
      load_kernel(mem, img);
      FAIL() << "accepted an image that should fail with: " << needle;
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_msg(std::vector<uint8_t>(100, 0), "not recognised");
  auto old = fake_bzimage();
  put<uint16_t>(old, 0x206, 0x204);
  expect_msg(old, "2.04 is too old");
  auto nomagic = fake_bzimage();
  nomagic[0x202] = 'X';
  expect_msg(nomagic, "not a bzImage");
  auto truncated = fake_bzimage();
  truncated.resize(5 * 512);
  expect_msg(truncated, "truncated");
  auto zimage = fake_bzimage();
  zimage[0x211] = 0;
  expect_msg(zimage, "zImage");
  auto small = memory::GuestMemory::create_x86(16 * MiB);
  EXPECT_THROW(load_kernel(small, fake_bzimage()), UsageError);  // needs 20 MiB
}

TEST(BootConfig, ZeroPageCarriesHeaderCmdlineInitrdE820AndRsdp) {
  auto mem = memory::GuestMemory::create_x86(128 * MiB);
  const LoadedKernel k = load_kernel(mem, fake_bzimage());
  std::vector<uint8_t> initrd(3 * MiB + 5, 0xab);
  BootInputs in;
  in.cmdline = "console=ttyS0 quiet";
  in.initrd_addr = place_initrd(mem, k, initrd);
  in.initrd_size = initrd.size();
  in.rsdp_addr = x86::kAcpiBase;
  in.e820 = build_e820(128 * MiB);
  write_cmdline(mem, in.cmdline, k.cmdline_size);
  write_zero_page(mem, k, in);

  const uint64_t zp = x86::kZeroPageAddr;
  EXPECT_EQ(get<uint16_t>(mem, zp + 0x1fe), 0xaa55);
  EXPECT_EQ(get<uint32_t>(mem, zp + 0x202), 0x53726448u);  // "HdrS"
  EXPECT_EQ(get<uint8_t>(mem, zp + zp::kTypeOfLoader), 0xff);
  EXPECT_EQ(get<uint32_t>(mem, zp + zp::kCmdLinePtr), x86::kCmdlineAddr);
  char buf[32] = {};
  mem.read(x86::kCmdlineAddr, buf, in.cmdline.size() + 1);
  EXPECT_STREQ(buf, "console=ttyS0 quiet");
  const uint32_t rd = get<uint32_t>(mem, zp + zp::kRamdiskImage);
  EXPECT_EQ(rd, in.initrd_addr);
  EXPECT_EQ(rd % 4096, 0u);
  EXPECT_LE(rd + initrd.size(), 128 * MiB);
  EXPECT_GE(rd, k.load_end);
  EXPECT_EQ(get<uint32_t>(mem, zp + zp::kRamdiskSize), initrd.size());
  EXPECT_EQ(get<uint8_t>(mem, rd + initrd.size() - 1), 0xab);
  EXPECT_EQ(get<uint64_t>(mem, zp + zp::kAcpiRsdpAddr), x86::kAcpiBase);
  ASSERT_EQ(get<uint8_t>(mem, zp + zp::kE820Entries), in.e820.size());
  for (size_t i = 0; i < in.e820.size(); ++i) {
    EXPECT_EQ(get<uint64_t>(mem, zp + zp::kE820Table + i * 20), in.e820[i].addr);
    EXPECT_EQ(get<uint64_t>(mem, zp + zp::kE820Table + i * 20 + 8), in.e820[i].size);
    EXPECT_EQ(get<uint32_t>(mem, zp + zp::kE820Table + i * 20 + 16), static_cast<uint32_t>(in.e820[i].type));
  }
}

TEST(BootConfig, InitrdRespectsInitrdAddrMaxAndRejectsWhatDoesNotFit) {
  auto mem = memory::GuestMemory::create_x86(256 * MiB);
  LoadedKernel k = load_kernel(mem, fake_bzimage());
  k.initrd_addr_max = 64 * MiB - 1;
  const uint64_t a = place_initrd(mem, k, std::vector<uint8_t>(MiB, 1));
  EXPECT_LE(a + MiB, 64 * MiB);
  EXPECT_THROW(place_initrd(mem, k, std::vector<uint8_t>(60 * MiB, 1)), UsageError);
}

TEST(BootConfig, CmdlineLongerThanKernelLimitIsRejected) {
  auto mem = memory::GuestMemory::create_x86(16 * MiB);
  EXPECT_NO_THROW(write_cmdline(mem, std::string(255, 'a'), 255));
  EXPECT_THROW(write_cmdline(mem, std::string(256, 'a'), 255), UsageError);
}

TEST(Pvh, ElfWithPhys32EntryNoteLoadsAndStartInfoIsWritten) {
  // ELF64 header, one PT_LOAD and one PT_NOTE with the Xen PHYS32_ENTRY note.
  std::vector<uint8_t> img(4096, 0);
  Elf64_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_machine = EM_X86_64;
  eh.e_phoff = sizeof(Elf64_Ehdr);
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = 2;
  put(img, 0, eh);
  Elf64_Phdr load{};
  load.p_type = PT_LOAD;
  load.p_offset = 0x800;
  load.p_paddr = 0x200000;
  load.p_filesz = 0x100;
  load.p_memsz = 0x2000;
  put(img, eh.e_phoff, load);
  Elf64_Phdr note{};
  note.p_type = PT_NOTE;
  note.p_offset = 0x400;
  note.p_filesz = sizeof(Elf64_Nhdr) + 4 + 4;
  put(img, eh.e_phoff + sizeof(Elf64_Phdr), note);
  Elf64_Nhdr nh{4, 4, 18};
  put(img, 0x400, nh);
  std::memcpy(img.data() + 0x400 + sizeof nh, "Xen", 4);
  put<uint32_t>(img, 0x400 + sizeof nh + 4, 0x200040);
  img[0x800] = 0x90;

  auto mem = memory::GuestMemory::create_x86(64 * MiB);
  mem.write_obj<uint8_t>(0x200100, 0xee);  // inside the bss: must be zeroed
  const LoadedKernel k = load_kernel(mem, img);
  EXPECT_EQ(k.mode, EntryMode::Pvh32);
  EXPECT_EQ(k.entry, 0x200040u);
  EXPECT_EQ(get<uint8_t>(mem, 0x200000), 0x90);
  EXPECT_EQ(get<uint8_t>(mem, 0x200100), 0);

  BootInputs in;
  in.e820 = build_e820(64 * MiB);
  in.initrd_addr = 0x3000000;
  in.initrd_size = 1234;
  in.rsdp_addr = x86::kAcpiBase;
  write_pvh_start_info(mem, in);
  const uint64_t si = x86::kPvhStartInfoAddr;
  EXPECT_EQ(get<uint32_t>(mem, si), pvh::kMagic);
  EXPECT_EQ(get<uint32_t>(mem, si + 12), 1u);
  EXPECT_EQ(get<uint64_t>(mem, si + 24), x86::kCmdlineAddr);
  EXPECT_EQ(get<uint64_t>(mem, si + 32), x86::kAcpiBase);
  EXPECT_EQ(get<uint32_t>(mem, si + 48), in.e820.size());
  const uint64_t mod = get<uint64_t>(mem, si + 16);
  EXPECT_EQ(get<uint64_t>(mem, mod), 0x3000000u);
  EXPECT_EQ(get<uint64_t>(mem, mod + 8), 1234u);
  const uint64_t mm = get<uint64_t>(mem, si + 40);
  EXPECT_EQ(get<uint64_t>(mem, mm + 24 + 0), in.e820[1].addr);

  // Without the note the image is refused.
  std::vector<uint8_t> nonote = img;
  put<uint32_t>(nonote, 0x400 + 8, 17);
  EXPECT_THROW(load_kernel(mem, nonote), UsageError);
  // A segment outside the file is refused.
  std::vector<uint8_t> bad = img;
  load.p_filesz = 0x10000;
  put(bad, eh.e_phoff, load);
  EXPECT_THROW(load_kernel(mem, bad), UsageError);
}
