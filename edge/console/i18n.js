// The gateway page's two languages. A string is a function when it takes arguments.
const STRINGS = {
  "en": {
    title: "Gateway",
    language: "Language",
    updated: (time) => `Updated ${time}; refreshed every 10 s.`,
    fetchError: (m) => `The gateway did not answer: ${m}`,
    health: "Health",
    healthy: "Healthy: readings are accepted and anchored.",
    degraded: "Degraded:",
    connectors: "Connectors",
    colConnector: "Connector", colState: "State",
    noConnectors: "No connector is configured.",
    chain: "Chain and sync",
    sync: "Sync",
    backlog: "Readings not yet in a block",
    unanchored: "Blocks not yet anchored",
    blockStates: (c, s) => `${c} chained, ${s} submitted`,
    lastAnchored: "Last anchored block",
    anchoredAt: (h, i) => `height ${h}, log index ${i}`,
    noneAnchored: "none yet",
    accepted: "Accepted (this run)",
    refused: "Refused (this run)",
    rejects: "Rejects by reason",
    rejectsNote: "Rejects in this run per 10-second sample, the last hour; the totals are since the store was created.",
    notEnough: "Not enough samples yet: one is taken every 10 s.",
    chartLabel: (n, mins) => `Chart of rejects by reason: ${n} in the last ${mins} min`,
    colReason: "Reason", colWindow: "In the chart", colTotal: "Total",
    noRejects: "No input has been rejected.",
    devices: "Devices",
    colDevice: "Device", colKey: "Key", colCounter: "Last counter", colLastReading: "Last reading",
    colValues: "Values", colBlock: "Block",
    keyLocal: "local (gateway.toml)", keyRegistry: "registry", keyNone: "none here",
    notChained: "not chained yet",
    noReading: "none stored",
    noDevices: "No device is known yet.",
    shownOf: (n, total) => `${n} of ${total} devices shown.`,
    problems: {
      "store-full": "Disk budget reached: input is refused",
      evidence: "Equivocation evidence stored: sync stopped",
      lookups: "Registry lookups failing: readings of devices without a key here are held",
      "blocks-refused": "Blocks cannot be anchored",
    },
  },
  "zh-CN": {
    title: "网关",
    language: "语言",
    updated: (time) => `更新于 ${time}；每 10 秒刷新。`,
    fetchError: (m) => `网关没有应答：${m}`,
    health: "健康状态",
    healthy: "正常：读数被接受并锚定。",
    degraded: "降级：",
    connectors: "连接器",
    colConnector: "连接器", colState: "状态",
    noConnectors: "未配置连接器。",
    chain: "区块链与同步",
    sync: "同步",
    backlog: "尚未打包进区块的读数",
    unanchored: "尚未锚定的区块",
    blockStates: (c, s) => `已链接 ${c}，已提交 ${s}`,
    lastAnchored: "最近锚定的区块",
    anchoredAt: (h, i) => `高度 ${h}，日志索引 ${i}`,
    noneAnchored: "尚无",
    accepted: "已接受（本次运行）",
    refused: "已拒收（本次运行）",
    rejects: "按原因统计的拒绝",
    rejectsNote: "本次运行中每 10 秒一个采样的拒绝数，最近一小时；总计自存储创建以来。",
    notEnough: "采样尚不足：每 10 秒采样一次。",
    chartLabel: (n, mins) => `按原因统计的拒绝图表：最近 ${mins} 分钟共 ${n} 次`,
    colReason: "原因", colWindow: "图表期间", colTotal: "总计",
    noRejects: "没有被拒绝的输入。",
    devices: "设备",
    colDevice: "设备", colKey: "密钥", colCounter: "最后计数器", colLastReading: "最后读数",
    colValues: "数值", colBlock: "区块",
    keyLocal: "本地（gateway.toml）", keyRegistry: "注册表", keyNone: "本地无密钥",
    notChained: "尚未打包",
    noReading: "无存储读数",
    noDevices: "尚无已知设备。",
    shownOf: (n, total) => `显示 ${total} 台设备中的 ${n} 台。`,
    problems: {
      "store-full": "已达磁盘配额：拒收输入",
      evidence: "已存储分叉证据：同步已停止",
      lookups: "注册表查询失败：本地无密钥的设备的读数被暂扣",
      "blocks-refused": "区块无法锚定",
    },
  },
};

const STORAGE_KEY = "edgeroot.gateway.lang";

export function initialLanguage() {
  const saved = localStorage.getItem(STORAGE_KEY);
  if (saved && STRINGS[saved]) return saved;
  return (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh-CN" : "en";
}

let current = "en";

export function setLanguage(lang) {
  current = STRINGS[lang] ? lang : "en";
  localStorage.setItem(STORAGE_KEY, current);
  document.documentElement.lang = current;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
}

export function language() { return current; }

// t("problems.evidence") finds nested keys; the English text stands in for a key a language lacks.
export function t(key) {
  const find = (table) => key.split(".").reduce((o, k) => (o == null ? undefined : o[k]), table);
  const found = find(STRINGS[current]);
  return found === undefined ? find(STRINGS.en) : found;
}
