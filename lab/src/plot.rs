//! docs/lab.png: failed requests per 100 ms for each row on one time axis, the rollout's
//! events as vertical lines. Drawn on a plain RGB raster (text from DejaVu Sans, Debian
//! `fonts-dejavu-core`), encoded with `png`.

use crate::load::Kind;
use crate::report::RowResult;
use crate::scenario::Action;
use crate::{err, LabError};
use ab_glyph::{Font, FontVec, PxScale, ScaleFont};
use std::path::Path;

/// Where the font is looked for; `KONG_RETRY_LAB_FONT` overrides.
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

type Rgb = [u8; 3];

const BG: Rgb = [255, 255, 255];
const INK: Rgb = [30, 30, 30];
const GRID: Rgb = [225, 225, 225];
const LANE: Rgb = [246, 246, 246];
const OUTAGE: Rgb = [200, 60, 60];
const BACK: Rgb = [60, 140, 60];
/// One colour per row, told apart also by each lane's own label.
const PALETTE: [Rgb; 7] = [
    [90, 90, 90],
    [230, 120, 20],
    [30, 100, 200],
    [110, 60, 170],
    [120, 120, 120],
    [20, 150, 150],
    [180, 40, 120],
];

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
    font: FontVec,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, c: Rgb, alpha: f32) {
        if x < 0 || y < 0 || x as usize >= self.w || y as usize >= self.h {
            return;
        }
        let i = (y as usize * self.w + x as usize) * 3;
        for (slot, new) in self.px[i..i + 3].iter_mut().zip(c) {
            let old = f32::from(*slot);
            *slot = (old + (f32::from(new) - old) * alpha.clamp(0.0, 1.0)) as u8;
        }
    }

    fn rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb) {
        for y in y0.min(y1)..y0.max(y1) {
            for x in x0.min(x1)..x0.max(x1) {
                self.set(x, y, c, 1.0);
            }
        }
    }

    fn vline(&mut self, x: i64, y0: i64, y1: i64, c: Rgb, dashed: bool) {
        for y in y0..y1 {
            if !dashed || (y / 4) % 2 == 0 {
                self.set(x, y, c, 1.0);
            }
        }
    }

    /// Text with its top-left corner at (x, y); returns its width.
    fn text(&mut self, x: f32, y: f32, size: f32, c: Rgb, s: &str) -> f32 {
        let scale = PxScale::from(size);
        let font = self.font.as_scaled(scale);
        let ascent = font.ascent();
        let mut pen = x;
        let mut glyphs = Vec::new();
        for ch in s.chars() {
            let id = font.glyph_id(ch);
            glyphs.push(id.with_scale_and_position(scale, ab_glyph::point(pen, y + ascent)));
            pen += font.h_advance(id);
        }
        let outlined: Vec<_> = glyphs
            .into_iter()
            .filter_map(|g| self.font.outline_glyph(g))
            .collect();
        for og in outlined {
            let b = og.px_bounds();
            let mut dots = Vec::new();
            og.draw(|gx, gy, cov| {
                dots.push((b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64, cov))
            });
            for (px, py, cov) in dots {
                self.set(px, py, c, cov);
            }
        }
        pen - x
    }

    fn text_width(&self, size: f32, s: &str) -> f32 {
        let font = self.font.as_scaled(PxScale::from(size));
        s.chars().map(|ch| font.h_advance(font.glyph_id(ch))).sum()
    }
}

/// The colour halfway to white.
fn lighter(c: Rgb) -> Rgb {
    c.map(|v| v + (255 - v) / 2)
}

fn load_font() -> Result<FontVec, LabError> {
    let path = std::env::var("KONG_RETRY_LAB_FONT").unwrap_or_else(|_| FONT.to_string());
    let bytes = std::fs::read(&path).map_err(|e| {
        err(format!(
            "the lab's picture needs the font {path} ({e}): install Debian's fonts-dejavu-core (./scripts/setup.sh does) or set KONG_RETRY_LAB_FONT to a .ttf"
        ))
    })?;
    FontVec::try_from_vec(bytes).map_err(|e| err(format!("font {path}: {e}")))
}

/// Draws the timeline of `results` (`duration_ms` of load) into `out`.
pub fn timeline(
    results: &[RowResult],
    duration_ms: f64,
    title: &str,
    out: &Path,
) -> Result<(), LabError> {
    let bin_ms = 100.0;
    let lane_h = 70i64;
    let (left, right, top) = (70i64, 30i64, 120i64);
    let w = 1500usize;
    let h = (top + lane_h * results.len() as i64 + 80) as usize;
    let mut c = Canvas {
        w,
        h,
        px: BG.iter().copied().cycle().take(w * h * 3).collect(),
        font: load_font()?,
    };
    let plot_w = w as i64 - left - right;
    let x_of = |ms: f64| left + ((ms / duration_ms) * plot_w as f64) as i64;
    let bins: Vec<Vec<u32>> = results
        .iter()
        .map(|r| r.failures_per_bin(bin_ms, duration_ms, |_| true))
        .collect();
    // The part of each bar that is unkeyed POSTs (which no gateway may resend after a
    // reset), drawn lighter.
    let unkeyed: Vec<Vec<u32>> = results
        .iter()
        .map(|r| r.failures_per_bin(bin_ms, duration_ms, |k| k == Kind::UnkeyedPost))
        .collect();
    let peak = bins.iter().flatten().copied().max().unwrap_or(0).max(1);
    c.text(left as f32, 10.0, 22.0, INK, title);
    c.text(
        left as f32,
        40.0,
        15.0,
        INK,
        &format!("Failed requests per 100 ms (bar height; full lane = {peak}), by time the request was due; the lighter part of a bar is unkeyed POSTs. Red dashed: an upstream taken away; green: started again."),
    );
    let bottom = top + lane_h * results.len() as i64;
    // Time grid every 2 s.
    let mut s = 0.0;
    while s * 1000.0 <= duration_ms {
        let x = x_of(s * 1000.0);
        c.vline(x, top, bottom, GRID, false);
        let label = format!("{s:.0}");
        let tw = c.text_width(13.0, &label);
        c.text(x as f32 - tw / 2.0, bottom as f32 + 6.0, 13.0, INK, &label);
        s += 2.0;
    }
    let xlabel = "time since the load started (s)";
    let tw = c.text_width(15.0, xlabel);
    c.text(
        (left + plot_w / 2) as f32 - tw / 2.0,
        bottom as f32 + 28.0,
        15.0,
        INK,
        xlabel,
    );
    // Lanes.
    for (i, ((r, b), u)) in results.iter().zip(&bins).zip(&unkeyed).enumerate() {
        let y0 = top + lane_h * i as i64;
        let base = y0 + lane_h - 6;
        c.rect(left, y0 + 18, left + plot_w, base, LANE);
        let colour = PALETTE[i % PALETTE.len()];
        let total: u32 = b.iter().sum();
        c.text(
            (left + 4) as f32,
            (y0 + 1) as f32,
            14.0,
            colour,
            &format!("{}: {total} failed", r.row.label()),
        );
        c.text((left - 22) as f32, (base - 14) as f32, 12.0, INK, "0");
        c.text(
            (left - 30) as f32,
            (y0 + 16) as f32,
            12.0,
            INK,
            &peak.to_string(),
        );
        for (k, &n) in b.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let x0 = x_of(k as f64 * bin_ms);
            let x1 = x_of((k + 1) as f64 * bin_ms).max(x0 + 2);
            let scale =
                |v: u32| ((f64::from(v) / f64::from(peak)) * (base - y0 - 18) as f64) as i64;
            let hgt = scale(n).max(2);
            c.rect(x0, base - hgt, x1 - 1, base, colour);
            let light = u.get(k).copied().unwrap_or(0);
            if light > 0 {
                c.rect(
                    x0,
                    base - scale(light).max(2),
                    x1 - 1,
                    base,
                    lighter(colour),
                );
            }
        }
    }
    // Events, from the first row (every row ran the same plan).
    if let Some(first) = results.first() {
        let mut label_row = 0;
        for &(t, a) in &first.events {
            let x = x_of(t);
            let colour = if a.is_outage() { OUTAGE } else { BACK };
            c.vline(x, top - 30 + 14 * (label_row % 2), bottom, colour, true);
            let text = a.label();
            c.text(
                x as f32 + 2.0,
                (top - 44 + 14 * (label_row % 2)) as f32,
                11.0,
                colour,
                &text,
            );
            label_row += 1;
            if matches!(a, Action::RestartAll) {
                label_row = 0;
            }
        }
    }
    c.text(4.0, (top - 16) as f32, 12.0, INK, "events:");
    write_png(out, c.w, c.h, &c.px)
}

fn write_png(out: &Path, w: usize, h: usize, px: &[u8]) -> Result<(), LabError> {
    let file =
        std::fs::File::create(out).map_err(|e| err(format!("creating {}: {e}", out.display())))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc
        .write_header()
        .map_err(|e| err(format!("{}: {e}", out.display())))?;
    writer
        .write_image_data(px)
        .map_err(|e| err(format!("{}: {e}", out.display())))
}
