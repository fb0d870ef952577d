// How values are shown: numbers, a divergence and colours, by the same rules as the server's
// human_number and divergence_text (service/domain/text.py) and palette (service/palette.py), whose
// tables come in the page's constants; so a chart, a page, a PNG and the CLI say the same.

import { constants } from "./api.js";

// 3 significant digits as people write them (0.547, 0.001, 12300); scientific below 0.001 or from 1e5.
export function humanNumber(value, digits = 3) {
  if (value === null || value === undefined) return "";
  if (value === 0) return "0";
  if (!Number.isFinite(value)) return Number.isNaN(value) ? "nan" : value > 0 ? "inf" : "-inf";
  if (Math.abs(value) < 1e-3 || Math.abs(value) >= 1e5) {
    const [mantissa, exponent] = value.toExponential(digits - 1).split("e");
    const trimmed = mantissa.includes(".") ? mantissa.replace(/0+$/, "").replace(/\.$/, "") : mantissa;
    const power = Number(exponent);
    return `${trimmed}e${power < 0 ? "-" : "+"}${String(Math.abs(power)).padStart(2, "0")}`;
  }
  return Number(value.toPrecision(digits)).toFixed(6).replace(/0+$/, "").replace(/\.$/, "");
}

// What `diverged_at` means: the epoch whose loss blew up is not stored, so the curve ends one before it.
export function divergenceText(divergedAt) {
  if (divergedAt === 0) return "diverged at epoch 0: no finite loss";
  return `loss finite through epoch ${divergedAt - 1}; diverged at epoch ${divergedAt}`;
}

const palette = constants.palette;

// An optimizer's colour: fixed for the known ones, else by the sum of its name's UTF-8 bytes.
export function optimizerColor(name) {
  if (name in palette.optimizers) return palette.optimizers[name];
  const sum = new TextEncoder().encode(name).reduce((total, byte) => total + byte, 0);
  return palette.spare[sum % palette.spare.length];
}

// A learning rate's colour on the one fixed log scale, whatever else its sweep holds.
export function learningRateColor(learningRate) {
  const [low, high] = palette.learning_rate_scale.map(Math.log10);
  const position = Math.min(Math.max((Math.log10(learningRate) - low) / (high - low), 0), 1);
  const stops = palette.learning_rate_stops;
  return stops[Math.round(position * (stops.length - 1))];
}
