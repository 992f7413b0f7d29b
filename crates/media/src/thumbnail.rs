//! Thumbnails: decode an image under hard limits, scale its longest side to
//! at most [`THUMBNAIL_MAX_SIDE`] pixels, encode it as JPEG.
//!
//! Decoding is CPU-bound and runs on the caller's executor (a blocking pool
//! in production, inline under simulation); this module only computes.

use std::io::Cursor;

use image::{ImageFormat, ImageReader, Limits};

/// Longest side of a thumbnail, pixels.
pub const THUMBNAIL_MAX_SIDE: u32 = 320;

/// The content type of every thumbnail.
pub const THUMBNAIL_CONTENT_TYPE: &str = "image/jpeg";

/// Largest source image decoded, in pixels per side: a decompression bomb
/// (a tiny file declaring a 100k × 100k canvas) is refused before any
/// allocation.
const MAX_SOURCE_SIDE: u32 = 16_384;

/// Most pixels decoded for a thumbnail: 64 MiB as RGBA. A larger image
/// (declared in its header, read first) is accepted without a thumbnail
/// rather than decoded: a 100 KB file can declare 11k x 11k, and decoding
/// it costs seconds of CPU and half a gigabyte.
const MAX_THUMBNAIL_PIXELS: u64 = 16 * 1024 * 1024;

/// Most memory a decode may allocate (the pixels above, and the decoder's
/// own buffers).
const MAX_DECODE_ALLOC: u64 = 96 * 1024 * 1024;

/// A made thumbnail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    /// JPEG bytes.
    pub jpeg: Vec<u8>,
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
}

/// Why no thumbnail could be made.
#[derive(Debug, thiserror::Error)]
#[error("image cannot be decoded: {0}")]
pub struct ThumbnailError(String);

/// Makes the thumbnail of an image in `format` (`image/png`…); `None` for
/// an image of more than [`MAX_THUMBNAIL_PIXELS`], which is not decoded.
///
/// # Errors
/// When the bytes do not decode as that format or exceed the decode limits.
pub fn make_thumbnail(
    bytes: &[u8],
    content_type: &str,
) -> Result<Option<Thumbnail>, ThumbnailError> {
    let format = ImageFormat::from_mime_type(content_type)
        .ok_or_else(|| ThumbnailError(format!("no decoder for {content_type}")))?;
    let reader = || {
        let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
        let mut limits = Limits::default();
        limits.max_image_width = Some(MAX_SOURCE_SIDE);
        limits.max_image_height = Some(MAX_SOURCE_SIDE);
        limits.max_alloc = Some(MAX_DECODE_ALLOC);
        reader.limits(limits);
        reader
    };
    let (width, height) = reader()
        .into_dimensions()
        .map_err(|e| ThumbnailError(e.to_string()))?;
    if u64::from(width) * u64::from(height) > MAX_THUMBNAIL_PIXELS {
        return Ok(None);
    }
    let image = reader()
        .decode()
        .map_err(|e| ThumbnailError(e.to_string()))?;
    // `thumbnail` keeps the aspect ratio and never enlarges past the bounds.
    let scaled = if image.width().max(image.height()) > THUMBNAIL_MAX_SIDE {
        image.thumbnail(THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE)
    } else {
        image
    };
    // JPEG has no alpha: flatten to RGB.
    let rgb = scaled.to_rgb8();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 80)
        .encode_image(&rgb)
        .map_err(|e| ThumbnailError(e.to_string()))?;
    Ok(Some(Thumbnail {
        width: rgb.width(),
        height: rgb.height(),
        jpeg,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = image::RgbaImage::from_fn(width, height, |x, y| {
            image::Rgba([(x % 256) as u8, (y % 256) as u8, 128, 255])
        });
        let mut out = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn longest_side_is_scaled_to_320_keeping_the_ratio() {
        let thumb = make_thumbnail(&png(1280, 640), "image/png")
            .unwrap()
            .unwrap();
        assert_eq!((thumb.width, thumb.height), (320, 160));
        let decoded = image::load_from_memory_with_format(&thumb.jpeg, ImageFormat::Jpeg).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (320, 160));
    }

    #[test]
    fn small_images_are_not_enlarged() {
        let thumb = make_thumbnail(&png(100, 50), "image/png").unwrap().unwrap();
        assert_eq!((thumb.width, thumb.height), (100, 50));
    }

    #[test]
    fn garbage_and_bombs_are_refused() {
        assert!(make_thumbnail(b"not an image", "image/png").is_err());
        // A PNG header declaring a 100,000 x 100,000 canvas.
        let mut bomb = png(1, 1);
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        assert!(make_thumbnail(&bomb, "image/png").is_err());
    }

    #[test]
    fn images_past_the_pixel_budget_get_no_thumbnail_and_no_decode() {
        // 5,000 x 4,000 declared: 20 Mpx, over the budget; the pixels after
        // the header are never read (here there are none to read).
        let mut large = png(1, 1);
        large[16..20].copy_from_slice(&5_000u32.to_be_bytes());
        large[20..24].copy_from_slice(&4_000u32.to_be_bytes());
        // The header chunk's CRC (over its type and data), made right.
        let crc = crc32(&large[12..29]);
        large[29..33].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(make_thumbnail(&large, "image/png").unwrap(), None);
    }

    /// CRC-32 (IEEE), as PNG chunks carry it.
    fn crc32(bytes: &[u8]) -> u32 {
        !bytes.iter().fold(u32::MAX, |crc, byte| {
            (0..8).fold(crc ^ u32::from(*byte), |c, _| {
                if c & 1 == 1 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                }
            })
        })
    }
}
