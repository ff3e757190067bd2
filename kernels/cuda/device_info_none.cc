// Built instead of device_info.cu when CUDA is off: no devices.
#include "kernels/cuda/device_info.h"

namespace nsa::cuda {

int DeviceCount() { return 0; }
std::string DeviceDescription(int) { return "unavailable: built without CUDA (-DNSA_CUDA=OFF)"; }

}  // namespace nsa::cuda
