#include "bench/serving/arrivals.h"

#include <cmath>
#include <random>

namespace nsa::bench {

std::vector<double> GammaIntervals(int64_t num, double rate, double burstiness, uint64_t seed) {
  std::vector<double> out(static_cast<size_t>(num), 0.0);
  if (std::isinf(rate)) return out;
  if (std::isinf(burstiness)) {
    for (double& v : out) v = 1.0 / rate;
    return out;
  }
  std::mt19937_64 rng(seed);
  std::gamma_distribution<double> gamma(burstiness, 1.0 / (rate * burstiness));
  for (double& v : out) v = gamma(rng);
  return out;
}

std::vector<double> ArrivalOffsets(int64_t num, double rate, double burstiness, uint64_t seed) {
  std::vector<double> t = GammaIntervals(num, rate, burstiness, seed);
  for (size_t i = 1; i < t.size(); ++i) t[i] += t[i - 1];
  if (!t.empty() && t.back() > 0) {
    const double scale = static_cast<double>(num) / rate / t.back();
    for (double& v : t) v *= scale;
  }
  return t;
}

}  // namespace nsa::bench
