// Which CUDA devices this process can use: the server picks the CUDA backend when there is one.
#pragma once

#include <string>

namespace nsa::cuda {

// Number of usable devices; 0 when there is no driver, no device, or CUDA was not built in.
int DeviceCount();
// "NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 79.1 GiB" for device `index`, or why it is unavailable.
std::string DeviceDescription(int index);

}  // namespace nsa::cuda
