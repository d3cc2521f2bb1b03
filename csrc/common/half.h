// 16-bit floating-point storage types shared by host and device code.
//
// Both are plain 16-bit words with bit-exact conversions (round to nearest even), so a CPU kernel and a
// CUDA kernel that go through these functions produce the same bits.
#pragma once

#include "hostdevice.h"

namespace ck {

struct float16 { uint16_t bits; };
struct bfloat16 { uint16_t bits; };

CK_HD float to_acc(float v) { return v; }
CK_HD double to_acc(double v) { return v; }

CK_HD float to_acc(bfloat16 v) { return bit_cast<float>(uint32_t(v.bits) << 16); }

CK_HD float to_acc(float16 v) {
  const uint32_t sign = uint32_t(v.bits & 0x8000u) << 16;
  const uint32_t exp = (v.bits >> 10) & 0x1fu;
  uint32_t mant = v.bits & 0x3ffu;
  if (exp == 0x1f) return bit_cast<float>(sign | 0x7f800000u | (mant << 13));  // inf / nan
  if (exp != 0) return bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return bit_cast<float>(sign);
  // subnormal half: value = mant * 2^-24, exactly representable as a float
  const float mag = float(mant) * 5.9604644775390625e-08f;
  return sign ? -mag : mag;
}

// Arithmetic happens in acc_t<T>: float for the 32- and 16-bit types, double for double.
template <class T> struct Accumulate { using type = float; };
template <> struct Accumulate<double> { using type = double; };
template <class T> using acc_t = typename Accumulate<T>::type;

// Conversion from acc_t<T> back into the storage type T (round to nearest even).
template <class T> CK_HD T from_acc(acc_t<T> v);
template <> CK_HD float from_acc<float>(float v) { return v; }
template <> CK_HD double from_acc<double>(double v) { return v; }

template <> CK_HD bfloat16 from_acc<bfloat16>(float v) {
  const uint32_t b = bit_cast<uint32_t>(v);
  if ((b & 0x7fffffffu) > 0x7f800000u) return bfloat16{uint16_t((b >> 16) | 0x40u)};  // quiet nan
  const uint32_t rounded = b + 0x7fffu + ((b >> 16) & 1u);
  return bfloat16{uint16_t(rounded >> 16)};
}

template <> CK_HD float16 from_acc<float16>(float v) {
  const uint32_t b = bit_cast<uint32_t>(v);
  const uint16_t sign = uint16_t((b >> 16) & 0x8000u);
  const uint32_t abs = b & 0x7fffffffu;
  if (abs > 0x7f800000u) return float16{uint16_t(sign | 0x7e00u)};        // nan
  if (abs >= 0x477ff000u) return float16{uint16_t(sign | 0x7c00u)};       // rounds to inf (>= 65520)
  if (abs < 0x38800000u) {                                                // half subnormal or zero
    if (abs < 0x33000000u) return float16{sign};                          // < 2^-25 rounds to 0
    const uint32_t exp = abs >> 23;                                       // 102..112
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - exp;                                    // 14..24
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (h & 1u))) ++h;
    return float16{uint16_t(sign | h)};
  }
  // normal: rebias exponent, round mantissa from 23 to 10 bits (a carry into the exponent is correct)
  const uint32_t h = ((abs - 0x38000000u) + 0xfffu + ((abs >> 13) & 1u)) >> 13;
  return float16{uint16_t(sign | h)};
}

}  // namespace ck
