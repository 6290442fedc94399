//! docs/lab.png: failed requests per 100 ms for each row on one time axis, the rollout's
//! events as vertical lines. Drawn on a plain RGB raster (text from DejaVu Sans, Debian
//! `fonts-dejavu-core`), encoded with `png`.

use crate::load::Kind;
use crate::report::RowResult;
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

/// One part of the picture: rows that ran the same plan, on one time axis.
pub struct Panel<'a> {
    pub title: &'a str,
    pub results: &'a [RowResult],
    /// Length of the load, ms (the time axis).
    pub duration_ms: f64,
}

const LANE_H: i64 = 70;
const LEFT: i64 = 70;
const RIGHT: i64 = 30;
/// From a panel's top to its first lane: its title and the events' labels.
const PANEL_HEAD: i64 = 84;
/// Below a panel's last lane: the time axis and its label.
const PANEL_FOOT: i64 = 56;
const BIN_MS: f64 = 100.0;

fn panel_height(p: &Panel) -> i64 {
    PANEL_HEAD + LANE_H * p.results.len() as i64 + PANEL_FOOT
}

/// Draws the timeline of every panel, one above the other, into `out`.
pub fn timeline(panels: &[Panel], title: &str, out: &Path) -> Result<(), LabError> {
    let panels: Vec<&Panel> = panels.iter().filter(|p| !p.results.is_empty()).collect();
    let header = 70i64;
    let w = 1500usize;
    let h = (header + panels.iter().map(|p| panel_height(p)).sum::<i64>()) as usize;
    let mut c = Canvas {
        w,
        h,
        px: BG.iter().copied().cycle().take(w * h * 3).collect(),
        font: load_font()?,
    };
    // One scale for every lane of every panel, so that bars compare across panels.
    let peak = panels
        .iter()
        .flat_map(|p| {
            p.results
                .iter()
                .flat_map(|r| r.failures_per_bin(BIN_MS, p.duration_ms, |_| true))
        })
        .max()
        .unwrap_or(0)
        .max(1);
    c.text(LEFT as f32, 10.0, 22.0, INK, title);
    c.text(
        LEFT as f32,
        40.0,
        15.0,
        INK,
        &format!("Failed requests per 100 ms (bar height; full lane = {peak}), by time the request was due; the lighter part of a bar is unkeyed POSTs. Red dashed: taken away; green: started again."),
    );
    let mut y = header;
    let mut colour_index = 0;
    for p in panels {
        draw_panel(&mut c, y, p, peak, &mut colour_index);
        y += panel_height(p);
    }
    write_png(out, c.w, c.h, &c.px)
}

/// Draws one panel with its top at `y`; lanes take colours from `colour_index` on.
fn draw_panel(c: &mut Canvas, y: i64, p: &Panel, peak: u32, colour_index: &mut usize) {
    let w = c.w as i64;
    let plot_w = w - LEFT - RIGHT;
    let duration_ms = p.duration_ms;
    let x_of = |ms: f64| LEFT + ((ms / duration_ms) * plot_w as f64) as i64;
    c.text(LEFT as f32, y as f32 + 4.0, 17.0, INK, p.title);
    let top = y + PANEL_HEAD;
    let bottom = top + LANE_H * p.results.len() as i64;
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
        (LEFT + plot_w / 2) as f32 - tw / 2.0,
        bottom as f32 + 26.0,
        15.0,
        INK,
        xlabel,
    );
    for (i, r) in p.results.iter().enumerate() {
        let bins = r.failures_per_bin(BIN_MS, duration_ms, |_| true);
        // The part of each bar that is unkeyed POSTs (which no gateway may resend after a
        // reset), drawn lighter.
        let unkeyed = r.failures_per_bin(BIN_MS, duration_ms, |k| k == Kind::UnkeyedPost);
        let y0 = top + LANE_H * i as i64;
        let base = y0 + LANE_H - 6;
        c.rect(LEFT, y0 + 18, LEFT + plot_w, base, LANE);
        let colour = PALETTE[*colour_index % PALETTE.len()];
        *colour_index += 1;
        let total: u32 = bins.iter().sum();
        let resent = r.outcomes.iter().filter(|o| o.resent.is_some()).count();
        let label = if r.nodes > 1 {
            format!(
                "{}: {total} failed; the client sent {resent} again to the other node",
                r.label()
            )
        } else {
            format!("{}: {total} failed", r.label())
        };
        c.text((LEFT + 4) as f32, (y0 + 1) as f32, 14.0, colour, &label);
        c.text((LEFT - 22) as f32, (base - 14) as f32, 12.0, INK, "0");
        c.text(
            (LEFT - 30) as f32,
            (y0 + 16) as f32,
            12.0,
            INK,
            &peak.to_string(),
        );
        let scale = |v: u32| ((f64::from(v) / f64::from(peak)) * (base - y0 - 18) as f64) as i64;
        for (k, &n) in bins.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let x0 = x_of(k as f64 * BIN_MS);
            let x1 = x_of((k + 1) as f64 * BIN_MS).max(x0 + 2);
            c.rect(x0, base - scale(n).max(2), x1 - 1, base, colour);
            let light = unkeyed.get(k).copied().unwrap_or(0);
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
    // Events, from the first row (every row of a panel ran the same plan).
    if let Some(first) = p.results.first() {
        for (n, &(t, a)) in first.events.iter().enumerate() {
            let x = x_of(t);
            let colour = if a.is_start() { BACK } else { OUTAGE };
            let row = (n % 2) as i64;
            c.vline(x, top - 30 + 14 * row, bottom, colour, true);
            c.text(
                x as f32 + 2.0,
                (top - 44 + 14 * row) as f32,
                11.0,
                colour,
                &a.label(),
            );
        }
    }
    c.text(4.0, (top - 16) as f32, 12.0, INK, "events:");
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
