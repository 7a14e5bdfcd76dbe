// PNG and JPEG to and from 8-bit RGB, over the system's libpng and libjpeg(-turbo).
//
// Decoding follows Pillow's `Image.open(f).convert("RGB")`, which is how DeepSeek's code loads images:
//   PNG  - palettes expanded, grey replicated (1/2/4-bit grey scaled to 0..255), alpha and tRNS dropped (not
//          composited), 16-bit colour and grey+alpha reduced to the high byte, 16-bit grey (Pillow's mode I;16)
//          clipped to 255; interlaced files supported. Missing or damaged chunks after the image data are ignored,
//          as Pillow ignores them.
//   JPEG - libjpeg's default decoding (islow IDCT, fancy upsampling); grey replicated; CMYK/YCCK read with Adobe
//          (inverted) polarity and converted as Pillow's cmyk2rgb does. A file that ends before its end-of-image marker is an error (as in Pillow).
// Every function returns IC_OK (0) or an IC_ERR_* code with a message in `error` (NUL-terminated, at most
// `error_capacity` bytes). A corrupt file never aborts the process: library errors are caught with setjmp/longjmp.
#ifndef IMAGE_CODECS_H
#define IMAGE_CODECS_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
  IC_OK = 0,
  IC_ERR_IO = 1,           // the file cannot be opened, read or written
  IC_ERR_TRUNCATED = 2,    // the data ends before the image does
  IC_ERR_CORRUPT = 3,      // the codec library rejected the data
  IC_ERR_UNSUPPORTED = 4,  // valid but not convertible to RGB here (e.g. a 2-component JPEG)
  IC_ERR_MEMORY = 5,       // allocation failed or the image is too large
  IC_ERR_ARGUMENT = 6,     // bad arguments (null pointers, non-positive sizes)
};

typedef struct {
  int width;
  int height;
  uint8_t* pixels;  // width * height * 3 bytes, rows top to bottom, RGB interleaved; free with ic_free
} ic_image;

// Decode PNG / JPEG data held in memory.
int ic_decode_png(const uint8_t* data, size_t size, ic_image* out, char* error, int error_capacity);
int ic_decode_jpeg(const uint8_t* data, size_t size, ic_image* out, char* error, int error_capacity);

// Read a whole file and decode it (the format is chosen by the caller).
int ic_read_png(const char* path, ic_image* out, char* error, int error_capacity);
int ic_read_jpeg(const char* path, ic_image* out, char* error, int error_capacity);

// Write 8-bit RGB (width * height * 3 bytes) as a non-interlaced PNG, flushed to disk before returning.
int ic_write_png(const char* path, const uint8_t* rgb, int width, int height, char* error, int error_capacity);

// Encode 8-bit RGB as a PNG in memory: *out (free with free()) holds *out_size bytes.
int ic_encode_png(const uint8_t* rgb, int width, int height, uint8_t** out, size_t* out_size, char* error, int error_capacity);

// Frees the pixels of an image filled by a decode/read call (safe on an empty or already freed image).
void ic_free(ic_image* image);

#ifdef __cplusplus
}
#endif
#endif
