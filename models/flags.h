// Command-line parsing shared by the tools: Abseil flags, with "--max-tokens" accepted as
// "--max_tokens" (users type hyphens; Abseil names flags with underscores).
#pragma once

#include <vector>

namespace nsa {

// Normalises the flag names in argv in place, then runs absl::ParseCommandLine; returns the
// positional arguments (argv[0] first).
std::vector<char*> ParseFlags(int argc, char** argv);

}  // namespace nsa
