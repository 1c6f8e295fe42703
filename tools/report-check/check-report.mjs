// Renders a PpoSharp run's report.html in headless Chromium at a given width and checks its layout.
//
//   node tools/report-check/check-report.mjs RUN_DIR/report.html [--width 1280] [--screenshot out.png] [--chromium PATH]
//
// No npm packages: Chromium itself lays the page out. A copy of the page (with <base> pointing at the run folder, so
// that plots/*.png load from there) gets a script that measures the layout once every image has loaded and writes the
// figures into the page; `chromium --headless --dump-dom` prints that page, and this script reads them back.
// `--screenshot` also writes a full-width PNG (chromium --screenshot) to look at.
//
// Checks (exit 1 with one line per failure, else 0; the figures are printed as JSON either way):
//   - no horizontal overflow: the page is no wider than the window;
//   - the content uses the width: the widest block of the page (plots grid, tables) spans >= 90 % of the window;
//   - the plots use the width: in every section with two plots or more, the plots span >= 90 % of the window from the
//     leftmost to the rightmost (a lone plot is drawn at its own size, not blown up);
//   - every image loaded (naturalWidth > 0) and none is drawn more than 1.25x its own pixels (blurred);
//   - no text is cut off: no element holds content wider than itself (clipped or spilling out, e.g. a long unbroken
//     path in a heading), and nothing reaches past the window's right edge.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const args = process.argv.slice(2);
const option = (name, fallback) => {
    const i = args.indexOf(name);
    return i >= 0 ? args.splice(i, 2)[1] : fallback;
};
const width = Number(option('--width', '1280'));
const screenshot = option('--screenshot', null);
const chromium = option('--chromium', '/usr/bin/chromium');
const report = path.resolve(args[0] ?? '');
if (!args[0] || !fs.existsSync(report)) {
    console.error('usage: node check-report.mjs RUN_DIR/report.html [--width 1280] [--screenshot out.png] [--chromium PATH]');
    process.exit(2);
}

const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--hide-scrollbars', '--allow-file-access-from-files', `--window-size=${width},2000`];

// Runs in the page once everything has loaded: the layout's figures, as JSON in <pre id="layout-check">.
function measure() {
    const vw = document.documentElement.clientWidth;
    const rect = (e) => e.getBoundingClientRect();
    const blocks = [...document.body.children].filter((e) => e.id !== 'layout-check');
    const images = [...document.images];
    const plots = images.filter((i) => i.closest('.plots'));
    const span = (imgs) => Math.max(...imgs.map((i) => rect(i).right)) - Math.min(...imgs.map((i) => rect(i).left));
    const grids = [...document.querySelectorAll('.plots')].map((g) => [...g.querySelectorAll('img')]).filter((g) => g.length >= 2);
    const clipped = [];
    for (const e of document.body.querySelectorAll('*')) {
        const style = getComputedStyle(e);
        const clips = style.overflowX !== 'visible' || style.textOverflow === 'ellipsis';
        const wider = e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1 && e.tagName !== 'TABLE';
        if (wider) clipped.push(`${e.tagName.toLowerCase()} ${clips ? 'clips' : 'spills'} ${e.scrollWidth} px into ${e.clientWidth}: ${e.textContent.slice(0, 40)}`);
        if (rect(e).right > vw + 1) clipped.push(`${e.tagName.toLowerCase()} ends at ${Math.round(rect(e).right)} px: ${e.textContent.slice(0, 40)}`);
    }
    return {
        viewport_width: vw,
        page_width: document.documentElement.scrollWidth,
        widest_block_width: Math.round(Math.max(...blocks.map((b) => rect(b).width))),
        plot_images: plots.length,
        plot_columns: new Set(plots.map((i) => Math.round(rect(i).left))).size,
        plot_grids_of_two_or_more: grids.length,
        plots_span_min: grids.length ? Math.round(Math.min(...grids.map(span))) : 0,
        plot_width_min: Math.round(Math.min(...plots.map((i) => rect(i).width))),
        images_not_loaded: images.filter((i) => !i.complete || i.naturalWidth === 0).map((i) => i.getAttribute('src')),
        images_upscaled: images.filter((i) => i.naturalWidth > 0 && rect(i).width > 1.25 * i.naturalWidth)
            .map((i) => `${i.getAttribute('src')} (${i.naturalWidth} px drawn at ${Math.round(rect(i).width)})`),
        image_natural_width_min: Math.min(...images.map((i) => i.naturalWidth)),
        clipped,
    };
}

const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'ppo-report-check-'));
try {
    const probe = `<base href="${pathToFileURL(path.dirname(report) + path.sep).href}"><script>
addEventListener('load', () => { const p = document.createElement('pre'); p.id = 'layout-check';
  p.textContent = JSON.stringify((${measure.toString()})()); document.body.appendChild(p); });
</script>`;
    const html = fs.readFileSync(report, 'utf8');
    const page = path.join(stage, 'report.html');
    fs.writeFileSync(page, html.includes('<head>') ? html.replace('<head>', '<head>' + probe) : probe + html);
    const dom = execFileSync(chromium, [...FLAGS, `--user-data-dir=${path.join(stage, 'profile')}`, '--virtual-time-budget=10000',
        '--dump-dom', pathToFileURL(page).href], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 60_000 });
    const match = dom.match(/<pre id="layout-check">([^<]*)<\/pre>/);
    if (!match) throw new Error('the page never finished loading (no layout figures in the dumped DOM)');
    const figures = JSON.parse(match[1].replaceAll('&quot;', '"').replaceAll('&lt;', '<').replaceAll('&gt;', '>').replaceAll('&amp;', '&'));
    if (screenshot) {
        execFileSync(chromium, [...FLAGS, `--user-data-dir=${path.join(stage, 'profile2')}`, `--screenshot=${path.resolve(screenshot)}`,
            pathToFileURL(report).href], { stdio: 'ignore', timeout: 60_000 });
    }

    const failures = [];
    const w = figures.viewport_width;
    if (figures.page_width > w) failures.push(`horizontal overflow: the page is ${figures.page_width} px wide in a ${w} px window`);
    if (figures.widest_block_width < 0.9 * w) failures.push(`the content spans ${figures.widest_block_width} px of ${w} (< 90 %)`);
    if (figures.plot_images === 0) failures.push('no plot images in .plots');
    else if (figures.plot_grids_of_two_or_more === 0) failures.push('no section with two plots or more');
    else if (figures.plots_span_min < 0.9 * w) failures.push(`a section's plots span ${figures.plots_span_min} px of ${w} (< 90 %)`);
    for (const src of figures.images_not_loaded) failures.push(`image not loaded: ${src}`);
    for (const s of figures.images_upscaled) failures.push(`image drawn larger than its pixels: ${s}`);
    for (const c of figures.clipped) failures.push(`cut off: ${c}`);
    console.log(JSON.stringify(figures, null, 2));
    for (const f of failures) console.error(`report check: ${f}`);
    process.exitCode = failures.length ? 1 : 0;
} finally {
    fs.rmSync(stage, { recursive: true, force: true });
}
