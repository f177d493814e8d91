#include "args.h"

#include <cmath>
#include <cstring>

namespace tsvmm {

bool Args::TypeError(const char* name, const char* expected) const {
  Napi::TypeError::New(Env(), std::string(function_) + ": argument " + name + " must be " + expected)
      .ThrowAsJavaScriptException();
  return false;
}

bool Args::RangeError(const char* name, const std::string& problem) const {
  Napi::RangeError::New(Env(), std::string(function_) + ": argument " + name + " " + problem)
      .ThrowAsJavaScriptException();
  return false;
}

namespace {

// Reading a double as an integer silently truncates or wraps; a fractional or out-of-range number
// is a caller bug that would otherwise reach the kernel as some other value.
bool IsIntegerIn(double value, double min, double max) {
  return std::trunc(value) == value && value >= min && value <= max;
}

}  // namespace

bool Args::Int32(size_t index, const char* name, int32_t* out) const {
  Napi::Value value = At(index);
  if (!value.IsNumber()) return TypeError(name, "a number");
  double number = value.As<Napi::Number>().DoubleValue();
  if (!IsIntegerIn(number, INT32_MIN, INT32_MAX)) return RangeError(name, "must be an int32");
  *out = static_cast<int32_t>(number);
  return true;
}

bool Args::Uint32(size_t index, const char* name, uint32_t* out) const {
  Napi::Value value = At(index);
  if (!value.IsNumber()) return TypeError(name, "a number");
  double number = value.As<Napi::Number>().DoubleValue();
  if (!IsIntegerIn(number, 0, UINT32_MAX)) return RangeError(name, "must be a uint32");
  *out = static_cast<uint32_t>(number);
  return true;
}

bool Args::SafeUint(size_t index, const char* name, uint64_t* out) const {
  Napi::Value value = At(index);
  if (!value.IsNumber()) return TypeError(name, "a number");
  double number = value.As<Napi::Number>().DoubleValue();
  if (!IsIntegerIn(number, 0, 9007199254740991.0)) {
    return RangeError(name, "must be a non-negative safe integer");
  }
  *out = static_cast<uint64_t>(number);
  return true;
}

bool Args::BigUint64Value(size_t index, const char* name, uint64_t* out) const {
  Napi::Value value = At(index);
  if (!value.IsBigInt()) return TypeError(name, "a bigint");
  bool lossless = false;
  uint64_t number = value.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) return RangeError(name, "must be in [0, 2^64)");
  *out = number;
  return true;
}

bool Args::String(size_t index, const char* name, std::string* out) const {
  Napi::Value value = At(index);
  if (!value.IsString()) return TypeError(name, "a string");
  *out = value.As<Napi::String>().Utf8Value();
  // A C string ends at the first NUL, so the kernel would see a different name than JS passed.
  if (out->find('\0') != std::string::npos) return RangeError(name, "must not contain NUL");
  return true;
}

bool Args::Uint8Array(size_t index, const char* name, size_t min_length, Bytes* out) const {
  Napi::Value value = At(index);
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    return TypeError(name, "a Uint8Array");
  }
  Napi::Uint8Array array = value.As<Napi::Uint8Array>();
  if (array.ByteLength() < min_length) {
    return RangeError(name, "must be at least " + std::to_string(min_length) + " bytes, got " +
                                std::to_string(array.ByteLength()));
  }
  *out = Bytes{array.Data(), array.ByteLength()};
  return true;
}

bool Args::Words32(size_t index, const char* name, uint32_t** out, size_t* count) const {
  Napi::Value value = At(index);
  if (!value.IsTypedArray()) return TypeError(name, "an Int32Array or Uint32Array");
  Napi::TypedArray array = value.As<Napi::TypedArray>();
  if (array.TypedArrayType() != napi_int32_array && array.TypedArrayType() != napi_uint32_array) {
    return TypeError(name, "an Int32Array or Uint32Array");
  }
  // napi_get_typedarray_info gives the data pointer for SharedArrayBuffer views too (ArrayBuffer()
  // does not: a SharedArrayBuffer is not an ArrayBuffer to N-API). Element views are element-aligned.
  void* data = nullptr;
  size_t length = 0;
  if (napi_get_typedarray_info(Env(), array, nullptr, &length, &data, nullptr, nullptr) != napi_ok ||
      (data == nullptr && length != 0)) {
    return TypeError(name, "a typed array over readable memory");
  }
  *out = static_cast<uint32_t*>(data);
  *count = length;
  return true;
}

bool Args::CountedStruct(size_t index, const char* name, size_t header_size, size_t entry_size,
                         Bytes* out) const {
  if (!Uint8Array(index, name, header_size, out)) return false;
  uint32_t count;
  std::memcpy(&count, out->data, sizeof count);  // a Uint8Array need not be aligned
  uint64_t needed = header_size + static_cast<uint64_t>(count) * entry_size;
  if (out->length < needed) {
    return RangeError(name, "must hold its header's " + std::to_string(count) + " entries (" +
                                std::to_string(needed) + " bytes), got " +
                                std::to_string(out->length));
  }
  return true;
}

bool Args::ArrayBuffer(size_t index, const char* name, size_t min_length,
                       Napi::ArrayBuffer* out) const {
  Napi::Value value = At(index);
  if (!value.IsArrayBuffer()) return TypeError(name, "an ArrayBuffer");
  Napi::ArrayBuffer buffer = value.As<Napi::ArrayBuffer>();
  if (buffer.ByteLength() < min_length) {
    return RangeError(name, "must be at least " + std::to_string(min_length) + " bytes, got " +
                                std::to_string(buffer.ByteLength()));
  }
  *out = buffer;
  return true;
}

bool Args::BigUint64Array(size_t index, const char* name, size_t min_length,
                          Napi::BigUint64Array* out) const {
  Napi::Value value = At(index);
  if (!value.IsTypedArray() ||
      value.As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array) {
    return TypeError(name, "a BigUint64Array");
  }
  Napi::BigUint64Array array = value.As<Napi::BigUint64Array>();
  if (array.ElementLength() < min_length) {
    return RangeError(name, "must have at least " + std::to_string(min_length) +
                                " elements, got " + std::to_string(array.ElementLength()));
  }
  *out = array;
  return true;
}

}  // namespace tsvmm
