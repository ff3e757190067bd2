// When each request is sent, as `vllm bench serve` schedules them: intervals drawn from a gamma
// distribution with shape = burstiness and scale = 1 / (rate * burstiness), so the mean interval
// is 1 / rate and the coefficient of variation 1 / sqrt(burstiness) (burstiness 1: Poisson
// arrivals; < 1 burstier, > 1 more even, infinite: a fixed interval). The cumulative offsets are
// then rescaled so the last one lands at num_requests / rate exactly (vLLM does this to steady
// throughput across seeds). An infinite rate sends everything at once.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

namespace nsa::bench {

inline constexpr double kInfinity = std::numeric_limits<double>::infinity();

// num raw intervals (seconds) from the gamma distribution above; seeded, so reproducible.
std::vector<double> GammaIntervals(int64_t num, double rate, double burstiness, uint64_t seed);

// Send offsets (seconds from the start of the benchmark), non-decreasing, one per request.
// The first request waits one interval too, as in vLLM.
std::vector<double> ArrivalOffsets(int64_t num, double rate, double burstiness, uint64_t seed);

}  // namespace nsa::bench
