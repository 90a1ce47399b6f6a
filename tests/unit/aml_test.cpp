// AML builder: exact bytes. The expected sequences are what iasl 20200925
// emits for the ASL quoted beside each case.
#include "x86/aml.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "util/error.h"

namespace rz::x86::aml {
namespace {

using B = std::vector<uint8_t>;

// "ABCD" as bytes, to keep name segments readable in expectations.
B seg(const char (&s)[5]) { return B(s, s + 4); }
B cat(std::initializer_list<B> parts) {
  B out;
  for (const B& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

TEST(AmlTest, PkgLengthBoundaries) {
  EXPECT_EQ(pkg_length(0), (B{0x00}));
  EXPECT_EQ(pkg_length(63), (B{0x3f}));
  EXPECT_EQ(pkg_length(64), (B{0x40, 0x04}));
  EXPECT_EQ(pkg_length(65), (B{0x41, 0x04}));
  EXPECT_EQ(pkg_length(4095), (B{0x4f, 0xff}));
  EXPECT_EQ(pkg_length(4096), (B{0x80, 0x00, 0x01}));
  EXPECT_EQ(pkg_length((1u << 20) - 1), (B{0x8f, 0xff, 0xff}));
  EXPECT_EQ(pkg_length(1u << 20), (B{0xc0, 0x00, 0x00, 0x01}));
  EXPECT_EQ(pkg_length((1u << 28) - 1), (B{0xcf, 0xff, 0xff, 0xff}));
  EXPECT_THROW(pkg_length(1u << 28), rz::Error);
}

TEST(AmlTest, WithPkgLengthCountsItself) {
  auto head = [](size_t body_size, size_t n) {
    B out = with_pkg_length(B(body_size, 0xaa));
    EXPECT_EQ(out.size(), body_size + n) << body_size;
    return B(out.begin(), out.begin() + n);
  };
  EXPECT_EQ(head(0, 1), (B{0x01}));
  EXPECT_EQ(head(62, 1), (B{0x3f}));                       // 62 + 1 = 63
  EXPECT_EQ(head(63, 2), (B{0x41, 0x04}));                 // 63 + 2 = 65
  EXPECT_EQ(head(4093, 2), (B{0x4f, 0xff}));               // 4095
  EXPECT_EQ(head(4094, 3), (B{0x81, 0x00, 0x01}));         // 4097
  EXPECT_EQ(head((1u << 20) - 4, 3), (B{0x8f, 0xff, 0xff}));        // 2^20 - 1
  EXPECT_EQ(head((1u << 20) - 3, 4), (B{0xc1, 0x00, 0x00, 0x01}));  // 2^20 + 1
}

TEST(AmlTest, BufferPkgLengthMatchesIasl) {
  // Buffer () {60 zeros}, {61 zeros}, {4092 zeros}
  B b60 = buffer(B(60));
  EXPECT_EQ(B(b60.begin(), b60.begin() + 3), (B{0x11, 0x3f, 0x0a}));
  B b61 = buffer(B(61));
  EXPECT_EQ(B(b61.begin(), b61.begin() + 5), (B{0x11, 0x41, 0x04, 0x0a, 0x3d}));
  B b4092 = buffer(B(4092));
  EXPECT_EQ(B(b4092.begin(), b4092.begin() + 7), (B{0x11, 0x82, 0x00, 0x01, 0x0b, 0xfc, 0x0f}));
  EXPECT_EQ(b4092.size(), 1 + 4098u);
}

TEST(AmlTest, NameStrings) {
  EXPECT_EQ(name_string("_S5"), seg("_S5_"));
  EXPECT_EQ(name_string("AB"), seg("AB__"));
  EXPECT_EQ(name_string("\\_SB"), cat({{'\\'}, seg("_SB_")}));
  EXPECT_EQ(name_string("\\_SB.PCI0"), cat({{'\\', 0x2e}, seg("_SB_"), seg("PCI0")}));
  EXPECT_EQ(name_string("\\_SB.COM1.ABC"), cat({{'\\', 0x2f, 3}, seg("_SB_"), seg("COM1"), seg("ABC_")}));
  EXPECT_EQ(name_string("^^FOO"), cat({{'^', '^'}, seg("FOO_")}));
  EXPECT_EQ(name_string("\\"), (B{'\\', 0x00}));
  for (const char* bad : {"1ABC", "ABCDE", "a", "A..B", "A.", "\\_SB.", "A-B", "^\\A"})
    EXPECT_THROW(name_string(bad), rz::Error) << bad;
}

TEST(AmlTest, Integers) {
  EXPECT_EQ(integer(0), (B{0x00}));                        // Zero
  EXPECT_EQ(integer(1), (B{0x01}));                        // One
  EXPECT_EQ(integer(~uint64_t{0}), (B{0xff}));             // Ones
  EXPECT_EQ(integer(2), (B{0x0a, 0x02}));
  EXPECT_EQ(integer(0xff), (B{0x0a, 0xff}));
  EXPECT_EQ(integer(0x100), (B{0x0b, 0x00, 0x01}));
  EXPECT_EQ(integer(0x1234), (B{0x0b, 0x34, 0x12}));
  EXPECT_EQ(integer(0x10000), (B{0x0c, 0x00, 0x00, 0x01, 0x00}));
  EXPECT_EQ(integer(0x12345678), (B{0x0c, 0x78, 0x56, 0x34, 0x12}));
  EXPECT_EQ(integer(0xffffffff), (B{0x0c, 0xff, 0xff, 0xff, 0xff}));
  EXPECT_EQ(integer(0x123456789a), (B{0x0e, 0x9a, 0x78, 0x56, 0x34, 0x12, 0, 0, 0}));
}

TEST(AmlTest, StringsAndEisaIds) {
  EXPECT_EQ(string("QEMU0001"), cat({{0x0d}, seg("QEMU"), seg("0001"), {0x00}}));
  EXPECT_EQ(string(""), (B{0x0d, 0x00}));
  EXPECT_THROW(string("caf\xc3\xa9"), rz::Error);
  EXPECT_EQ(eisa_id("PNP0501"), (B{0x0c, 0x41, 0xd0, 0x05, 0x01}));
  EXPECT_EQ(eisa_id("PNP0A08"), (B{0x0c, 0x41, 0xd0, 0x0a, 0x08}));
  EXPECT_EQ(eisa_id("PNP0C02"), (B{0x0c, 0x41, 0xd0, 0x0c, 0x02}));
  EXPECT_EQ(eisa_id_value("PNP0501"), 0x0105d041u);
  for (const char* bad : {"PNP050", "PNP05011", "pnp0501", "PNP05G1", "P1P0501"})
    EXPECT_THROW(eisa_id(bad), rz::Error) << bad;
}

TEST(AmlTest, NamePackageBuffer) {
  // Name (_S5, Package () {5, 5, Zero, Zero})
  EXPECT_EQ(name("_S5", package({integer(5), integer(5), integer(0), integer(0)})),
            cat({{0x08}, seg("_S5_"), {0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00}}));
  // Package (2) {One, Ones}
  EXPECT_EQ(package({integer(1), integer(~uint64_t{0})}), (B{0x12, 0x04, 0x02, 0x01, 0xff}));
  EXPECT_THROW(package(TermList(256, integer(0))), rz::Error);
  // Buffer () {1, 2, 3}
  EXPECT_EQ(buffer({1, 2, 3}), (B{0x11, 0x06, 0x0a, 0x03, 0x01, 0x02, 0x03}));
}

TEST(AmlTest, MethodsAndReturn) {
  // Method (FOO, 2, Serialized) { Return (0x0F) }
  EXPECT_EQ(method("FOO", 2, true, {return_(integer(0x0f))}),
            cat({{0x14, 0x09}, seg("FOO_"), {0x0a, 0xa4, 0x0a, 0x0f}}));
  // Method (BAR, 0, NotSerialized) { Return (One) }
  EXPECT_EQ(method("BAR", 0, false, {return_(integer(1))}),
            cat({{0x14, 0x08}, seg("BAR_"), {0x00, 0xa4, 0x01}}));
  EXPECT_THROW(method("BAR", 8, false, {}), rz::Error);
}

TEST(AmlTest, ScopeDeviceWithResources) {
  // Scope (\_SB) { Device (COM1) {
  //   Name (_HID, EisaId ("PNP0501")) Name (_UID, One) Name (_STA, 0x0F)
  //   Name (_CRS, ResourceTemplate () { IO (Decode16, 0x3F8, 0x3F8, 0x00, 0x08) IRQNoFlags () {4} })
  // } }
  B got = scope("\\_SB", {device("COM1", {
      name("_HID", eisa_id("PNP0501")),
      name("_UID", integer(1)),
      name("_STA", integer(0x0f)),
      name("_CRS", ResourceTemplate().io(0x3f8, 0x3f8, 0, 8).irq_no_flags({4}).build()),
  })});
  B want = cat({{0x10, 0x3a, '\\'}, seg("_SB_"), {0x5b, 0x82, 0x32}, seg("COM1"),
                {0x08}, seg("_HID"), {0x0c, 0x41, 0xd0, 0x05, 0x01},
                {0x08}, seg("_UID"), {0x01},
                {0x08}, seg("_STA"), {0x0a, 0x0f},
                {0x08}, seg("_CRS"), {0x11, 0x10, 0x0a, 0x0d},
                {0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x00, 0x08},
                {0x22, 0x10, 0x00}, {0x79, 0x00}});
  EXPECT_EQ(got, want);
  // Scope (\_SB.COM1) { Name (ABC, Zero) }
  EXPECT_EQ(scope("\\_SB.COM1", {name("ABC", integer(0))}),
            cat({{0x10, 0x11, '\\', 0x2e}, seg("_SB_"), seg("COM1"), {0x08}, seg("ABC_"), {0x00}}));
}

TEST(AmlTest, ResourceDescriptors) {
  auto desc = [](const ResourceTemplate& rt) { return rt.descriptors(); };
  // IRQNoFlags () {3, 4, 15}
  EXPECT_EQ(desc(ResourceTemplate().irq_no_flags({3, 4, 15})), (B{0x22, 0x18, 0x80}));
  EXPECT_THROW(ResourceTemplate().irq_no_flags({16}), rz::Error);
  // Memory32Fixed (ReadWrite, 0xE0000000, 0x00100000) and (ReadOnly, ...)
  EXPECT_EQ(desc(ResourceTemplate().memory32_fixed(0xe0000000, 0x100000)),
            (B{0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xe0, 0x00, 0x00, 0x10, 0x00}));
  EXPECT_EQ(desc(ResourceTemplate().memory32_fixed(0xe0000000, 0x100000, false)),
            (B{0x86, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe0, 0x00, 0x00, 0x10, 0x00}));
  // WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, 0, 0xFF, 0, 0x100)
  EXPECT_EQ(desc(ResourceTemplate().word_bus_number(0, 0xff)),
            (B{0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0x00, 0x00,
               0x00, 0x00, 0x01}));
  // WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, 0x1000, 0xFFFF, 0, 0xF000)
  EXPECT_EQ(desc(ResourceTemplate().word_io(0x1000, 0xffff)),
            (B{0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03, 0x00, 0x00, 0x00, 0x10, 0xff, 0xff, 0x00,
               0x00, 0x00, 0xf0}));
  EXPECT_THROW(ResourceTemplate().word_io(0, 0xffff), rz::Error);  // length 0x10000
  EXPECT_THROW(ResourceTemplate().word_io(2, 1), rz::Error);
  // DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
  //              0, 0xC0000000, 0xDFFFFFFF, 0, 0x20000000)
  EXPECT_EQ(desc(ResourceTemplate().dword_memory(0xc0000000, 0xdfffffff, Cache::NonCacheable)),
            (B{0x87, 0x17, 0x00, 0x00, 0x0c, 0x01, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0xc0,
               0xff, 0xff, 0xff, 0xdf, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0x20}));
  // QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite,
  //              0, 0x8000000000, 0xFFFFFFFFFF, 0, 0x8000000000)
  EXPECT_EQ(desc(ResourceTemplate().qword_memory(0x8000000000, 0xffffffffff, Cache::Cacheable)),
            cat({{0x8a, 0x2b, 0x00, 0x00, 0x0c, 0x03}, B(8, 0),
                 {0, 0, 0, 0, 0x80, 0, 0, 0}, {0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0}, B(8, 0),
                 {0, 0, 0, 0, 0x80, 0, 0, 0}}));
  // ResourceTemplate () {} is just the end tag.
  EXPECT_EQ(ResourceTemplate().build(), (B{0x11, 0x05, 0x0a, 0x02, 0x79, 0x00}));
}

}  // namespace
}  // namespace rz::x86::aml
