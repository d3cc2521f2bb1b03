// Host+device math of magnitude top-k: an order-preserving integer key for |x| and its radix digits.
//
// Selection works on keys, never on floats: for IEEE formats, clearing the sign bit leaves an unsigned
// integer that orders like |x|. Every NaN maps to the largest key, so NaN counts as the largest magnitude
// and NaNs tie with each other (then the lower index wins, as for any tie).
#pragma once

#include "../common/half.h"

namespace ck {

template <class T> struct MagnitudeKey;
template <> struct MagnitudeKey<float> { using type = uint32_t; using bits_t = uint32_t; static constexpr int bits = 31; };
template <> struct MagnitudeKey<double> { using type = uint64_t; using bits_t = uint64_t; static constexpr int bits = 63; };
template <> struct MagnitudeKey<float16> { using type = uint32_t; using bits_t = uint16_t; static constexpr int bits = 15; };
template <> struct MagnitudeKey<bfloat16> { using type = uint32_t; using bits_t = uint16_t; static constexpr int bits = 15; };

template <class T> using key_t = typename MagnitudeKey<T>::type;
template <class T> constexpr int key_bits = MagnitudeKey<T>::bits;

// Bits of +inf with the sign cleared; anything above is a NaN.
template <class T> constexpr uint64_t inf_key();
template <> constexpr uint64_t inf_key<float>() { return 0x7f800000u; }
template <> constexpr uint64_t inf_key<double>() { return 0x7ff0000000000000ull; }
template <> constexpr uint64_t inf_key<float16>() { return 0x7c00u; }
template <> constexpr uint64_t inf_key<bfloat16>() { return 0x7f80u; }

template <class T>
CK_HD key_t<T> magnitude_key(T v) {
  using bits_t = typename MagnitudeKey<T>::bits_t;
  constexpr key_t<T> max_key = (key_t<T>(1) << key_bits<T>) - 1;  // = abs mask; what every NaN maps to
  const key_t<T> key = key_t<T>(bit_cast<bits_t>(v)) & max_key;
  return key > key_t<T>(inf_key<T>()) ? max_key : key;
}

// The `width`-bit radix digit of `key` that starts at bit `shift`.
template <class K>
CK_HD uint32_t radix_digit(K key, int shift, int width) {
  return uint32_t(key >> shift) & ((1u << width) - 1u);
}

}  // namespace ck
