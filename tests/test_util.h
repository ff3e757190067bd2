// Helpers the tests share: random prompt tokens, and the relative error every numeric comparison
// reports.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace nsa {

// n token ids uniform in [3, vocab) (0-2 are unk, bos, eos), a pure function of the seed.
inline std::vector<int> RandomTokens(int n, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> pick(3, vocab - 1);
  std::vector<int> ids(n);
  for (int& t : ids) t = pick(rng);
  return ids;
}

// max |got - want| / max |want| (the scale floored at 1e-6); infinity when got holds NaN or Inf.
template <typename T>
double MaxRelErr(const std::vector<float>& got, const std::vector<T>& want) {
  double err = 0, scale = 1e-6;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    err = std::max(err, std::fabs(static_cast<double>(got[i]) - static_cast<double>(want[i])));
    scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
  }
  return err / scale;
}

}  // namespace nsa
