// ringzero end to end on this machine's /dev/kvm, with the project's own
// freestanding test guest (guest/). Each test runs the real binary.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <random>

#include "process.h"

using rz::test::ProcessOptions;
using rz::test::ProcessResult;
using rz::test::run_process;

namespace {

bool have_kvm() { return access("/dev/kvm", R_OK | W_OK) == 0; }

#define REQUIRE_KVM()                                                                  \
  do {                                                                                 \
    if (!have_kvm()) GTEST_SKIP() << "no usable /dev/kvm on this machine: test skipped"; \
  } while (0)

std::string cmdline(const std::string& extra, unsigned mem_mib, unsigned cpus) {
  return "console=ttyS0 rzt.mem=" + std::to_string(mem_mib) + " rzt.cpus=" + std::to_string(cpus) +
         (extra.empty() ? "" : " " + extra);
}

ProcessResult boot(unsigned mem_mib, unsigned cpus, const std::string& extra = "",
                   ProcessOptions opt = {}) {
  return run_process({RZ_BINARY, "run", "--kernel", RZ_TEST_GUEST, "--memory",
                      std::to_string(mem_mib) + "M", "--cpus", std::to_string(cpus), "--cmdline",
                      cmdline(extra, mem_mib, cpus)},
                     opt);
}

std::string describe(const ProcessResult& r) {
  return "exit " + std::to_string(r.exit_code) + (r.timed_out ? " (timed out)" : "") + "\n--- stdout:\n" +
         r.out + "\n--- stderr:\n" + r.err;
}

int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

std::string temp_file(const std::string& name, const std::string& content) {
  const std::string path = ::testing::TempDir() + "/" + std::to_string(getpid()) + "-" + name;
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

}  // namespace

TEST(TestGuest, OneCpuBootsChecksBootParamsAndPowersOff) {
  REQUIRE_KVM();
  const auto r = boot(64, 1);
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("rz-test-guest: PASS"), std::string::npos) << describe(r);
  EXPECT_EQ(r.out.find("FAIL"), std::string::npos) << describe(r);
  EXPECT_NE(r.out.find("cmdline: console=ttyS0 rzt.mem=64 rzt.cpus=1"), std::string::npos) << describe(r);
  EXPECT_NE(r.err.find("guest powered off"), std::string::npos) << describe(r);
}

TEST(TestGuest, FourCpusAreAllInTheMadt) {
  REQUIRE_KVM();
  const auto r = boot(128, 4);
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("rz-test-guest: PASS"), std::string::npos) << describe(r);
}

TEST(TestGuest, MemoryAbove4GiBIsSplitAroundTheHole) {
  REQUIRE_KVM();
  const auto r = boot(4608, 2);
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("rz-test-guest: PASS"), std::string::npos) << describe(r);
}

TEST(TestGuest, WrongExpectationIsReportedAsPanic) {
  REQUIRE_KVM();
  // The guest is told to expect 3 CPUs but gets 2: it fails a check and
  // signals through pvpanic, so ringzero exits with status 3.
  const auto r = run_process({RZ_BINARY, "run", "--kernel", RZ_TEST_GUEST, "--memory", "64M", "--cpus", "2",
                              "--cmdline", "console=ttyS0 rzt.mem=64 rzt.cpus=3"});
  EXPECT_EQ(r.exit_code, 3) << describe(r);
  EXPECT_NE(r.out.find("FAIL"), std::string::npos) << describe(r);
  EXPECT_NE(r.err.find("panic"), std::string::npos) << describe(r);
}

TEST(ExitPaths, ResetThroughI8042EndsWithStatus0) {
  REQUIRE_KVM();
  const auto r = boot(64, 1, "rzt.mode=reset");
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.err.find("reset"), std::string::npos) << describe(r);
}

TEST(ExitPaths, PvpanicEndsWithStatus3) {
  REQUIRE_KVM();
  const auto r = boot(64, 1, "rzt.mode=panic");
  EXPECT_EQ(r.exit_code, 3) << describe(r);
  EXPECT_NE(r.err.find("panic"), std::string::npos) << describe(r);
}

TEST(ExitPaths, TripleFaultIsReportedWithRegistersAndStatus1) {
  REQUIRE_KVM();
  const auto r = boot(64, 1, "rzt.mode=triplefault");
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find("KVM_EXIT_SHUTDOWN"), std::string::npos) << describe(r);
  EXPECT_NE(r.err.find("vCPU 0"), std::string::npos) << describe(r);
  EXPECT_NE(r.err.find("RIP 0x"), std::string::npos) << describe(r);
  EXPECT_NE(r.err.find("rax="), std::string::npos) << describe(r);
}

TEST(ExitPaths, SigtermStopsTheVmWithStatus143) {
  REQUIRE_KVM();
  ProcessOptions o;
  o.signal = SIGTERM;
  o.signal_after_ms = 200;
  o.signal_when_out_contains = "mode hang";
  const auto r = boot(64, 2, "rzt.mode=hang", o);
  EXPECT_EQ(r.exit_code, 143) << describe(r);
  EXPECT_NE(r.err.find("SIGTERM"), std::string::npos) << describe(r);
}

TEST(ExitPaths, SigintStopsTheVmWithStatus130) {
  REQUIRE_KVM();
  ProcessOptions o;
  o.signal = SIGINT;
  o.signal_after_ms = 200;
  o.signal_when_out_contains = "mode hang";
  const auto r = boot(64, 1, "rzt.mode=hang", o);
  EXPECT_EQ(r.exit_code, 130) << describe(r);
}

TEST(Console, InputReachesTheGuestThroughTheUart) {
  REQUIRE_KVM();
  ProcessOptions o;
  o.stdin_data = "hello ringzero\n";
  const auto r = boot(64, 1, "rzt.mode=echo", o);
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("HELLO RINGZERO"), std::string::npos) << describe(r);
}

// ---- bad input: status 2 and exactly one line on stderr naming the problem

void expect_usage_error(const std::vector<std::string>& args, const std::string& needle,
                        ProcessOptions opt = {}) {
  std::vector<std::string> argv{RZ_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  const auto r = run_process(argv, opt);
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find(needle), std::string::npos) << "wanted '" << needle << "'\n" << describe(r);
  // One error line (the emulator notice may precede it on a software KVM).
  int error_lines = 0;
  size_t pos = 0;
  while ((pos = r.err.find("error:", pos)) != std::string::npos) ++error_lines, ++pos;
  EXPECT_EQ(error_lines, 1) << describe(r);
  EXPECT_LE(count_lines(r.err), 2) << describe(r);
}

TEST(BadInput, MissingKernel) { expect_usage_error({"run", "--kernel", "/nonexistent/vmlinuz"}, "No such file"); }

TEST(BadInput, KernelIsADirectory) { expect_usage_error({"run", "--kernel", "/tmp"}, "not a regular file"); }

TEST(BadInput, CorruptKernel) {
  REQUIRE_KVM();
  std::string junk(100000, '\0');
  std::mt19937 rng(1);
  for (auto& c : junk) c = static_cast<char>(rng());
  expect_usage_error({"run", "--kernel", temp_file("junk.bin", junk)}, "not recognised");
}

TEST(BadInput, TruncatedKernel) {
  REQUIRE_KVM();
  std::ifstream f(RZ_TEST_GUEST, std::ios::binary);
  std::string img((std::istreambuf_iterator<char>(f)), {});
  ASSERT_GT(img.size(), 1024u);
  expect_usage_error({"run", "--kernel", temp_file("trunc.bzImage", img.substr(0, 1024))}, "truncated");
}

TEST(BadInput, InitrdThatDoesNotFit) {
  REQUIRE_KVM();
  const std::string big = temp_file("big.initrd", std::string(40 << 20, 'x'));
  expect_usage_error({"run", "--kernel", RZ_TEST_GUEST, "--memory", "32M", "--initrd", big}, "does not fit");
  std::remove(big.c_str());
}

TEST(BadInput, MissingInitrd) {
  expect_usage_error({"run", "--kernel", RZ_TEST_GUEST, "--initrd", "/nonexistent.img"}, "initrd /nonexistent.img");
}

TEST(BadInput, ImpossibleSizes) {
  expect_usage_error({"run", "--kernel", RZ_TEST_GUEST, "--memory", "0"}, "--memory");
  expect_usage_error({"run", "--kernel", RZ_TEST_GUEST, "--memory", "64T"}, "--memory");
  expect_usage_error({"run", "--kernel", RZ_TEST_GUEST, "--memory", "100000G"}, "host's");
  expect_usage_error({"run", "--kernel", RZ_TEST_GUEST, "--cpus", "0"}, "--cpus");
}

TEST(BadInput, TooManyCpus) {
  REQUIRE_KVM();
  expect_usage_error({"run", "--kernel", RZ_TEST_GUEST, "--cpus", "100000"}, "--cpus 100000 is out of range");
}

TEST(BadInput, UnknownFlagAndCommand) {
  expect_usage_error({"run", "--kernel", RZ_TEST_GUEST, "--frobnicate"}, "unknown flag for run: --frobnicate");
  expect_usage_error({"launch"}, "unknown command 'launch'");
}

TEST(BadInput, NoPermissionOnDevKvm) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to drop to an unprivileged user";
  struct stat st {};
  if (stat("/dev/kvm", &st) != 0) GTEST_SKIP() << "no /dev/kvm";
  if (st.st_mode & S_IROTH) GTEST_SKIP() << "/dev/kvm is world-accessible here";
  ProcessOptions o;
  o.drop_privileges = true;
  expect_usage_error({"run", "--kernel", "/proc/self/exe"}, "permission", o);
}

TEST(Cli, HelpDescribesTheFlags) {
  const auto r = run_process({RZ_BINARY, "run", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  for (const char* flag : {"--kernel", "--initrd", "--cmdline", "--cpus", "--memory"})
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag;
  const auto top = run_process({RZ_BINARY, "--help"});
  EXPECT_EQ(top.exit_code, 0);
  EXPECT_NE(top.out.find("doctor"), std::string::npos);
}

TEST(Doctor, ReportsTheKindOfKvm) {
  REQUIRE_KVM();
  const auto r = run_process({RZ_BINARY, "doctor"});
  EXPECT_NE(r.out.find("KVM kind:"), std::string::npos) << describe(r);
  EXPECT_NE(r.out.find("capabilities:"), std::string::npos) << describe(r);
}
