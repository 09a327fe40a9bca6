// Decodes the page format described in _wire.py: one column's binary buffers into
// an array of display strings (null where the value is null). The kernel places
// this file before each front end that reads pages (_table.js, _grid.js).

function decodeColumn(column, numRows) {
  const data = column.data;
  const valid = new Uint8Array(column.valid.buffer, column.valid.byteOffset, numRows);
  const values = new Array(numRows);
  if (column.type === "string") {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const offsets = column.offsets;
    const decoder = new TextDecoder();
    for (let i = 0; i < numRows; i++) {
      const start = offsets.getInt32(i * 4, true);
      const end = offsets.getInt32((i + 1) * 4, true);
      values[i] = decoder.decode(bytes.subarray(start, end));
    }
  } else {
    for (let i = 0; i < numRows; i++) {
      if (column.type === "uint64") values[i] = data.getBigUint64(i * 8, true).toString();
      else if (column.type === "int64") values[i] = data.getBigInt64(i * 8, true).toString();
      else values[i] = formatFloat(data.getFloat64(i * 8, true));
    }
  }
  return values.map((value, i) => (valid[i] ? value : null));
}

function formatFloat(value) {
  return Number.isInteger(value) ? String(value) : value.toPrecision(6).replace(/\.?0+$/, "");
}
