// Command-line parsing.
#include <gtest/gtest.h>

#include "cli/options.h"
#include "util/error.h"

using namespace rz;
using namespace rz::cli;

TEST(Cli, RunWithAllFlags) {
  const Options o = parse({"run", "--kernel", "vmlinuz", "--initrd=initrd.img", "--cmdline",
                           "console=ttyS0 quiet", "--cpus", "2", "--memory", "1G"});
  EXPECT_EQ(o.command, Command::Run);
  EXPECT_EQ(o.run.kernel, "vmlinuz");
  EXPECT_EQ(o.run.initrd, "initrd.img");
  EXPECT_EQ(o.run.cmdline, "console=ttyS0 quiet");
  EXPECT_EQ(o.run.cpus, 2u);
  EXPECT_EQ(o.run.memory, 1ULL << 30);
}

TEST(Cli, Defaults) {
  const Options o = parse({"run", "--kernel", "k"});
  EXPECT_EQ(o.run.cpus, 1u);
  EXPECT_EQ(o.run.memory, 512ULL << 20);
}

TEST(Cli, MemorySizes) {
  EXPECT_EQ(parse_memory_size("512"), 512ULL << 20);
  EXPECT_EQ(parse_memory_size("512M"), 512ULL << 20);
  EXPECT_EQ(parse_memory_size("512mib"), 512ULL << 20);
  EXPECT_EQ(parse_memory_size("2G"), 2ULL << 30);
  EXPECT_EQ(parse_memory_size("3GiB"), 3ULL << 30);
  for (const char* bad : {"0", "0M", "", "M", "12X", "-1", "1.5G", "99999999999999999999G", "5K"})
    EXPECT_THROW(parse_memory_size(bad), UsageError) << bad;
}

TEST(Cli, BadInputNamesTheProblem) {
  auto msg = [](std::vector<std::string> a) {
    try {
      parse(a);
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  EXPECT_EQ(msg({"run"}), "run: --kernel is required");
  EXPECT_EQ(msg({"run", "--kernel", "k", "--cpus", "0"}), "--cpus must be at least 1");
  EXPECT_EQ(msg({"run", "--kernel", "k", "--bogus"}), "unknown flag for run: --bogus");
  EXPECT_EQ(msg({"run", "--kernel"}), "flag --kernel needs a value");
  EXPECT_EQ(msg({"frobnicate"}), "unknown command 'frobnicate' (try: ringzero --help)");
  EXPECT_NE(msg({"run", "--kernel", "k", "--cpus", "two"}).find("invalid number"), std::string::npos);
  EXPECT_NE(msg({"run", "--kernel", "k", "--memory", "0"}).find("greater than 0"), std::string::npos);
}

TEST(Cli, HelpForms) {
  EXPECT_EQ(parse({"--help"}).command, Command::Help);
  const Options o = parse({"run", "--help"});
  EXPECT_EQ(o.command, Command::Help);
  EXPECT_EQ(o.help_topic, "run");
  EXPECT_EQ(parse({"doctor"}).command, Command::Doctor);
  EXPECT_NE(run_help_text().find("--memory"), std::string::npos);
}

TEST(Cli, DeviceFlags) {
  const Options o = parse({"run", "--kernel", "k", "--disk", "path=root.ext4", "--disk",
                           "path=data.img,readonly=on", "--net", "tap=tap0,mac=06:00:ac:10:00:02",
                           "--rng", "--vsock", "cid=3,socket=/run/vm1.vsock"});
  ASSERT_EQ(o.run.disks.size(), 2u);
  EXPECT_EQ(o.run.disks[1], "path=data.img,readonly=on");
  ASSERT_EQ(o.run.nets.size(), 1u);
  EXPECT_EQ(o.run.nets[0].tap, "tap0");
  EXPECT_EQ(o.run.nets[0].mac, "06:00:ac:10:00:02");
  EXPECT_TRUE(o.run.rng);
  EXPECT_EQ(o.run.vsock, "cid=3,socket=/run/vm1.vsock");
}

TEST(Cli, BadDeviceFlags) {
  for (std::vector<std::string> bad : {
           std::vector<std::string>{"--net", "tap=tap0,mac=zz:00:ac:10:00:02"},
           {"--net", "mac=06:00:ac:10:00:02"},
           {"--net", "tap=tap0,speed=10"},
           {"--net", "tap=tap0,mac=01:00:00:00:00:01"},
           {"--disk", "readonly=on"},
           {"--disk", "path=x,engine=magic"},
           {"--vsock", "cid=2,socket=/tmp/v"},
           {"--vsock", "cid=3"},
       }) {
    std::vector<std::string> args{"run", "--kernel", "k"};
    args.insert(args.end(), bad.begin(), bad.end());
    EXPECT_THROW(parse(args), UsageError) << bad[1];
  }
}
