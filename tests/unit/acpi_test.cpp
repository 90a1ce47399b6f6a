// ACPI tables: layout, checksums and contents, walked from the RSDP the way
// an OS finds them; plus a check with ACPICA's own disassembler when present.
#include "x86/acpi.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "util/error.h"

namespace rz::x86 {
namespace {

namespace fs = std::filesystem;

// A table found in the image: its offset in AcpiImage::bytes and length.
struct Table {
  size_t off = 0;
  size_t len = 0;
};

class Image {
 public:
  explicit Image(const AcpiConfig& cfg) : img_(build_acpi_tables(cfg)) {}

  const std::vector<uint8_t>& bytes() const { return img_.bytes; }
  const AcpiImage& image() const { return img_; }

  uint64_t rd(size_t off, int size) const {
    EXPECT_LE(off + size, img_.bytes.size());
    uint64_t v = 0;
    for (int i = 0; i < size && off + i < img_.bytes.size(); ++i)
      v |= uint64_t{img_.bytes[off + i]} << (8 * i);
    return v;
  }
  std::string str(size_t off, size_t n) const {
    return std::string(img_.bytes.begin() + off, img_.bytes.begin() + off + n);
  }
  // Offset of guest address `addr`, which must lie inside the image.
  size_t at(uint64_t addr) const {
    EXPECT_GE(addr, img_.base);
    EXPECT_LT(addr - img_.base, img_.bytes.size());
    return static_cast<size_t>(addr - img_.base);
  }
  Table table_at(uint64_t addr) const {
    size_t off = at(addr);
    return {off, static_cast<size_t>(rd(off + 4, 4))};
  }
  // Every table reachable from the RSDP, by signature (XSDT, its entries,
  // the FADT's DSDT and FACS).
  std::map<std::string, Table> tables() const {
    std::map<std::string, Table> out;
    Table xsdt = table_at(rd(24, 8));
    out["XSDT"] = xsdt;
    for (size_t e = xsdt.off + 36; e < xsdt.off + xsdt.len; e += 8) {
      Table t = table_at(rd(e, 8));
      out[str(t.off, 4)] = t;
    }
    if (out.count("FACP")) {
      out["DSDT"] = table_at(rd(out["FACP"].off + 140, 8));
      out["FACS"] = table_at(rd(out["FACP"].off + 132, 8));
    }
    return out;
  }
  uint8_t sum(size_t off, size_t n) const {
    uint8_t s = 0;
    for (size_t i = off; i < off + n; ++i) s = static_cast<uint8_t>(s + img_.bytes[i]);
    return s;
  }
  bool contains(const Table& t, const std::vector<uint8_t>& needle) const {
    auto begin = img_.bytes.begin() + t.off, end = begin + t.len;
    return std::search(begin, end, needle.begin(), needle.end()) != end;
  }

 private:
  AcpiImage img_;
};

AcpiConfig pci_config() {
  AcpiConfig cfg;
  cfg.num_cpus = 2;
  cfg.ecam_base = kPciEcamBase;
  cfg.pci_bus_end = 0;
  cfg.pci_mmio32_start = kPciMmio32Start;
  cfg.pci_mmio32_end = kPciMmio32End;
  cfg.pci_mmio64_start = 0x80'0000'0000;
  cfg.pci_mmio64_end = 0x100'0000'0000;
  return cfg;
}

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

TEST(AcpiTest, RsdpFields) {
  Image img{AcpiConfig{}};
  EXPECT_EQ(img.image().base, kAcpiBase);
  EXPECT_EQ(img.image().rsdp_addr, kAcpiBase);
  EXPECT_EQ(img.str(0, 8), "RSD PTR ");
  EXPECT_EQ(img.sum(0, 20), 0) << "ACPI 1.0 checksum";
  EXPECT_EQ(img.sum(0, 36), 0) << "extended checksum";
  EXPECT_EQ(img.str(9, 6), "RINGZ0");
  EXPECT_EQ(img.rd(15, 1), 2u) << "revision";
  EXPECT_EQ(img.rd(16, 4), 0u) << "no RSDT";
  EXPECT_EQ(img.rd(20, 4), 36u) << "length";
  Table xsdt = img.table_at(img.rd(24, 8));
  EXPECT_EQ(img.str(xsdt.off, 4), "XSDT");
  EXPECT_LE(img.bytes().size(), kAcpiMaxSize);
}

TEST(AcpiTest, TableChecksumsLengthsAndHeaders) {
  for (const AcpiConfig& cfg : {AcpiConfig{}, pci_config()}) {
    Image img{cfg};
    auto tables = img.tables();
    for (const auto& [sig, t] : tables) {
      SCOPED_TRACE(sig);
      ASSERT_LE(t.off + t.len, img.bytes().size());
      EXPECT_EQ((img.image().base + t.off) % (sig == "FACS" ? 64 : 16), 0u) << "alignment";
      if (sig == "FACS") continue;  // no checksum, no standard header
      EXPECT_EQ(img.sum(t.off, t.len), 0);
      EXPECT_EQ(img.str(t.off + 10, 6), "RINGZ0");
      EXPECT_EQ(img.str(t.off + 16, 8), "RINGZERO");
      EXPECT_EQ(img.str(t.off + 28, 4), "RZ  ");
    }
    size_t n_entries = cfg.ecam_base ? 3 : 2;  // FADT, MADT [, MCFG]
    EXPECT_EQ(tables["XSDT"].len, 36 + 8 * n_entries);
    EXPECT_EQ(tables["FACP"].len, 276u);
    EXPECT_EQ(img.rd(tables["FACP"].off + 8, 1), 6u) << "FADT revision";
    EXPECT_EQ(img.rd(tables["DSDT"].off + 8, 1), 2u) << "DSDT revision (64-bit integers)";
    EXPECT_EQ(tables["FACS"].len, 64u);
    EXPECT_EQ((img.image().base + tables["FACS"].off) % 64, 0u);
    EXPECT_EQ(img.rd(tables["FACS"].off + 32, 1), 2u) << "FACS version";
  }
}

TEST(AcpiTest, FadtFieldOffsets) {
  Image img{AcpiConfig{}};
  auto tables = img.tables();
  size_t f = tables.at("FACP").off;
  uint64_t dsdt = img.image().base + tables.at("DSDT").off;
  uint64_t facs = img.image().base + tables.at("FACS").off;
  EXPECT_EQ(img.rd(f + 36, 4), facs) << "FIRMWARE_CTRL";
  EXPECT_EQ(img.rd(f + 40, 4), dsdt) << "DSDT";
  EXPECT_EQ(img.rd(f + 46, 2), kAcpiSciIrq) << "SCI_INT";
  EXPECT_EQ(img.rd(f + 48, 4), 0u) << "SMI_CMD";
  EXPECT_EQ(img.rd(f + 56, 4), kAcpiPm1aEvtPort) << "PM1a_EVT_BLK";
  EXPECT_EQ(img.rd(f + 64, 4), kAcpiPm1aCntPort) << "PM1a_CNT_BLK";
  EXPECT_EQ(img.rd(f + 76, 4), 0u) << "no PM timer";
  EXPECT_EQ(img.rd(f + 88, 1), 4u) << "PM1_EVT_LEN";
  EXPECT_EQ(img.rd(f + 89, 1), 2u) << "PM1_CNT_LEN";
  EXPECT_EQ(img.rd(f + 109, 2), 0x7u) << "IAPC_BOOT_ARCH: legacy devices, 8042, no VGA";
  uint64_t flags = img.rd(f + 112, 4);
  EXPECT_EQ(flags, (1u << 0) | (1u << 2) | (1u << 4) | (1u << 5) | (1u << 10))
      << "WBINVD, PROC_C1, PWR_BUTTON, SLP_BUTTON, RESET_REG_SUP";
  EXPECT_EQ(flags & (1u << 20), 0u) << "not hardware-reduced";
  // RESET_REG: System I/O, 8 bits, byte access.
  EXPECT_EQ(img.rd(f + 116, 4), 0x01'00'08'01u);
  EXPECT_EQ(img.rd(f + 120, 8), kAcpiResetPort);
  EXPECT_EQ(img.rd(f + 128, 1), kAcpiResetValue);
  EXPECT_EQ(img.rd(f + 132, 8), facs) << "X_FIRMWARE_CTRL";
  EXPECT_EQ(img.rd(f + 140, 8), dsdt) << "X_DSDT";
  EXPECT_EQ(img.rd(f + 148, 4), 0x02'00'20'01u) << "X_PM1a_EVT_BLK: I/O, 32 bits";
  EXPECT_EQ(img.rd(f + 152, 8), kAcpiPm1aEvtPort);
  EXPECT_EQ(img.rd(f + 172, 4), 0x02'00'10'01u) << "X_PM1a_CNT_BLK: I/O, 16 bits";
  EXPECT_EQ(img.rd(f + 176, 8), kAcpiPm1aCntPort);

  AcpiConfig with_button;
  with_button.fixed_power_button = true;
  Image img2{with_button};
  EXPECT_EQ(img2.rd(img2.tables().at("FACP").off + 112, 4) & (1u << 4), 0u);
}

TEST(AcpiTest, MadtEntries) {
  for (uint32_t n : {1u, 2u, 64u}) {
    SCOPED_TRACE(n);
    AcpiConfig cfg;
    cfg.num_cpus = n;
    Image img{cfg};
    Table m = img.tables().at("APIC");
    EXPECT_EQ(img.rd(m.off + 36, 4), kLapicAddr);
    EXPECT_EQ(img.rd(m.off + 40, 4), 1u) << "PCAT_COMPAT";
    std::map<uint8_t, int> count;
    uint32_t next_cpu = 0;
    for (size_t e = m.off + 44; e < m.off + m.len;) {
      uint8_t type = img.rd(e, 1), len = img.rd(e + 1, 1);
      ASSERT_GE(len, 2);
      ++count[type];
      switch (type) {
        case 0:  // Processor Local APIC
          EXPECT_EQ(len, 8);
          EXPECT_EQ(img.rd(e + 2, 1), next_cpu) << "UID";
          EXPECT_EQ(img.rd(e + 3, 1), next_cpu) << "APIC ID";
          EXPECT_EQ(img.rd(e + 4, 4), 1u) << "enabled";
          ++next_cpu;
          break;
        case 1:  // I/O APIC
          EXPECT_EQ(len, 12);
          EXPECT_EQ(img.rd(e + 2, 1), n) << "ID after the CPUs'";
          EXPECT_EQ(img.rd(e + 4, 4), kIoapicAddr);
          EXPECT_EQ(img.rd(e + 8, 4), 0u) << "GSI base";
          break;
        case 2: {  // Interrupt Source Override
          EXPECT_EQ(len, 10);
          uint8_t irq = img.rd(e + 3, 1);
          EXPECT_TRUE(irq == 0 || irq == kAcpiSciIrq);
          EXPECT_EQ(img.rd(e + 4, 4), irq == 0 ? 2u : kAcpiSciIrq);
          EXPECT_EQ(img.rd(e + 8, 2), irq == 0 ? 0u : 0xdu) << "SCI: level, active-high";
          break;
        }
        case 4:  // Local APIC NMI
          EXPECT_EQ(len, 6);
          EXPECT_EQ(img.rd(e + 2, 1), 0xffu);
          EXPECT_EQ(img.rd(e + 5, 1), 1u) << "LINT1";
          break;
        default:
          ADD_FAILURE() << "unexpected MADT entry type " << int{type};
      }
      e += len;
    }
    EXPECT_EQ(count[0], static_cast<int>(n));
    EXPECT_EQ(count[1], 1);
    EXPECT_EQ(count[2], 2);
    EXPECT_EQ(count[4], 1);
    EXPECT_EQ(m.len, 44 + 8 * n + 12 + 2 * 10 + 6);
  }
}

TEST(AcpiTest, McfgOnlyWithEcam) {
  EXPECT_EQ(Image{AcpiConfig{}}.tables().count("MCFG"), 0u);
  AcpiConfig cfg = pci_config();
  cfg.pci_bus_end = 3;
  Image img{cfg};
  Table m = img.tables().at("MCFG");
  EXPECT_EQ(m.len, 60u);
  EXPECT_EQ(img.rd(m.off + 44, 8), kPciEcamBase);
  EXPECT_EQ(img.rd(m.off + 52, 2), 0u) << "segment";
  EXPECT_EQ(img.rd(m.off + 54, 1), 0u) << "start bus";
  EXPECT_EQ(img.rd(m.off + 55, 1), 3u) << "end bus";
}

TEST(AcpiTest, DsdtContents) {
  ASSERT_EQ(kSlpTypS5, 5);
  const std::vector<uint8_t> pnp0501{0x0c, 0x41, 0xd0, 0x05, 0x01};
  {
    Image img{AcpiConfig{}};
    Table d = img.tables().at("DSDT");
    EXPECT_TRUE(img.contains(d, {0x08, '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0a, 5, 0x0a, 5, 0, 0}));
    EXPECT_TRUE(img.contains(d, pnp0501));
    EXPECT_TRUE(img.contains(d, bytes_of("QEMU0001")));
    EXPECT_TRUE(img.contains(d, {0x47, 0x01, 0x05, 0x05, 0x05, 0x05, 0x01, 0x01})) << "pvpanic IO";
    EXPECT_FALSE(img.contains(d, bytes_of("PCI0")));
  }
  {
    AcpiConfig cfg;
    cfg.pvpanic = false;
    Image img{cfg};
    EXPECT_FALSE(img.contains(img.tables().at("DSDT"), bytes_of("QEMU0001")));
  }
  {
    Image img{pci_config()};
    Table d = img.tables().at("DSDT");
    EXPECT_TRUE(img.contains(d, bytes_of("PCI0")));
    EXPECT_TRUE(img.contains(d, {0x0c, 0x41, 0xd0, 0x0a, 0x08})) << "PNP0A08";
    EXPECT_TRUE(img.contains(d, {0x0c, 0x41, 0xd0, 0x0c, 0x02})) << "PNP0C02";
    EXPECT_TRUE(img.contains(d, bytes_of("_PRT\x12")));
    // _PRT entry for slot 31, pin D: {0x001FFFFF, 3, Zero, GSI}
    EXPECT_TRUE(img.contains(d, {0x12, 0x0c, 0x04, 0x0c, 0xff, 0xff, 0x1f, 0x00, 0x0a, 0x03, 0x00,
                                 0x0a, static_cast<uint8_t>(pci_intx_gsi(31, 3))}));
  }
}

TEST(AcpiTest, PciIntxSwizzle) {
  EXPECT_EQ(pci_intx_gsi(0, 0), 16u);
  EXPECT_EQ(pci_intx_gsi(0, 3), 19u);
  EXPECT_EQ(pci_intx_gsi(1, 0), 17u);
  EXPECT_EQ(pci_intx_gsi(3, 1), 16u);
  EXPECT_EQ(pci_intx_gsi(31, 3), 18u);
  for (uint8_t slot = 0; slot < 32; ++slot)
    for (uint8_t pin = 0; pin < 4; ++pin) {
      EXPECT_GE(pci_intx_gsi(slot, pin), 16u);
      EXPECT_LE(pci_intx_gsi(slot, pin), 19u);
    }
}

TEST(AcpiTest, RejectsBadConfigs) {
  auto bad = [](auto change) {
    AcpiConfig cfg = pci_config();
    change(cfg);
    EXPECT_THROW(build_acpi_tables(cfg), rz::Error);
  };
  bad([](AcpiConfig& c) { c.num_cpus = 0; });
  bad([](AcpiConfig& c) { c.num_cpus = 255; });
  bad([](AcpiConfig& c) { c.base = kAcpiBase + 8; });
  bad([](AcpiConfig& c) { c.ecam_base = kPciEcamBase + 0x1000; });
  bad([](AcpiConfig& c) { c.ecam_base = 0xfff00000, c.pci_bus_end = 1; });
  bad([](AcpiConfig& c) { c.pci_mmio32_start = c.pci_mmio32_end + 1; });
  bad([](AcpiConfig& c) { c.pci_mmio32_end = 0x1'0000'0001; });
  bad([](AcpiConfig& c) { c.pci_mmio64_end = c.pci_mmio64_start - 1; });
  AcpiConfig most;
  most.num_cpus = 254;
  EXPECT_LE(build_acpi_tables(most).bytes.size(), kAcpiMaxSize);
}

// --- iasl, ACPICA's compiler/disassembler (Debian: acpica-tools) -----------

bool have_iasl() { return std::system("command -v iasl >/dev/null 2>&1") == 0; }

// Runs `cmd` in `dir`; returns its exit status, output in `log`.
int run_in(const fs::path& dir, const std::string& cmd, std::string* log) {
  fs::path out = dir / "cmd.log";
  int rc = std::system(("cd '" + dir.string() + "' && " + cmd + " >'" + out.string() + "' 2>&1").c_str());
  std::ifstream in(out);
  std::stringstream ss;
  ss << in.rdbuf();
  *log = ss.str();
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct TempDir {
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "rz_acpi_XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path path;
};

TEST(AcpiTest, IaslDisassemblesEveryTable) {
  if (!have_iasl()) GTEST_SKIP() << "iasl not installed (apt-get install acpica-tools); skipping";
  for (const AcpiConfig& cfg : {AcpiConfig{}, pci_config()}) {
    bool pci = cfg.ecam_base != 0;
    SCOPED_TRACE(pci ? "with PCI" : "without PCI");
    TempDir dir;
    Image img{cfg};
    // ACPICA's file loader takes no lone RSDP; RsdpFields covers it.
    for (const auto& [sig, t] : img.tables()) {
      SCOPED_TRACE(sig);
      std::ofstream(dir.path / (sig + ".dat"), std::ios::binary)
          .write(reinterpret_cast<const char*>(img.bytes().data() + t.off), t.len);
      std::string log;
      ASSERT_EQ(run_in(dir.path, "iasl -d " + sig + ".dat", &log), 0) << log;
      std::string dsl = slurp(dir.path / (sig + ".dsl"));
      ASSERT_FALSE(dsl.empty()) << log;
      for (const char* bad : {"Error", "Warning", "Incorrect", "Invalid"}) {
        EXPECT_EQ(log.find(bad), std::string::npos) << log;
        EXPECT_EQ(dsl.find(bad), std::string::npos) << bad;
      }
      if (sig == "DSDT") {
        for (const char* want : {"_S5_", "PNP0501", "QEMU0001"})
          EXPECT_NE(dsl.find(want), std::string::npos) << want;
        EXPECT_EQ(dsl.find("PNP0A08") != std::string::npos, pci);
        EXPECT_EQ(dsl.find("_PRT") != std::string::npos, pci);
        // Recompiling the disassembly without optimizations gives back our
        // AML byte for byte (the header differs: compiler ID, checksum).
        ASSERT_EQ(run_in(dir.path, "iasl -oa -p recompiled DSDT.dsl", &log), 0) << log;
        std::string aml = slurp(dir.path / "recompiled.aml");
        std::string ours(img.bytes().begin() + t.off, img.bytes().begin() + t.off + t.len);
        ASSERT_EQ(aml.size(), ours.size());
        EXPECT_TRUE(aml.compare(36, std::string::npos, ours, 36) == 0) << "AML body differs";
      }
    }
  }
}

}  // namespace
}  // namespace rz::x86
