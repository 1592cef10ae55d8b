// The console's two languages. A string is a function when it takes arguments.
const STRINGS = {
  "en": {
    title: "Identifier resolution",
    language: "Language",
    node: "Node",
    identifier: "Identifier",
    search: "Resolve",
    loading: "Resolving and verifying…",
    error: (m) => `The node refused: ${m}`,
    netError: (m) => `The node could not be reached: ${m}`,
    record: "Record",
    verification: "Verification in this browser",
    proven: "Proven",
    provenAbsent: "Proven absent",
    notProven: "Not proven",
    serverOnly: "Checked by the server only",
    foundAsOf: (id, n) => `${id}: record as of log size ${n}`,
    absentAsOf: (id, n) => `${id} is not registered (as of log size ${n})`,
    notProvenNote: "Do not rely on this answer: at least one check failed.",
    colIndex: "Index", colType: "Type", colValue: "Value", colTtl: "TTL", colTime: "Timestamp",
    checkPolicy: "Trust policy",
    checkLogSig: "Checkpoint signed by the log",
    checkQuorum: "Witness cosignatures (quorum)",
    checkInclusion: "Map head included in the checkpoint",
    checkMap: "Record in the map",
    checkMapAbsent: "Absence in the map",
    why: {
      policyOk: (logs, w, q) => `${logs} log key(s), ${w} witness(es), quorum ${q}; the policy this browser pinned`,
      policyPinnedNow: (logs, w, q) => `${logs} log key(s), ${w} witness(es), quorum ${q}; first use: this browser pins it now (compare it with the policy the log's operator gave you)`,
      policyChanged: (since) => `the node now publishes a different policy than the one this browser pinned on ${since}: a node could name its own keys in it`,
      policyBad: (m) => `the node's policy cannot be read: ${m}`,
      noLogKey: (o) => `the policy lists no log key named ${o}`,
      logSigOk: (k) => `Ed25519 signature of ${k} verified`,
      logSigMissing: (k) => `no signature line of ${k}`,
      logSigBad: (k) => `the signature of ${k} does not verify`,
      cosigBad: (w) => `the cosignature of witness ${w} does not verify`,
      quorumOk: (names, q) => `valid cosignatures from ${names}; quorum ${q} met`,
      quorumShort: (names, q) => `valid cosignatures from ${names || "no witness"}; quorum ${q} not met`,
      quorumNone: "the policy requires no witnesses",
      inclusionOk: (i, n) => `RFC 6962 inclusion of leaf ${i} in tree size ${n} verified`,
      inclusionBad: (m) => `inclusion proof fails: ${m}`,
      rolledBack: (n, seen) => `the checkpoint (log size ${n}) is older than one this browser already verified (log size ${seen}): a rolled-back or split view`,
      stale: (i, n) => `map head at index ${i} is not the last leaf of size ${n}`,
      mapOk: "the sparse-map proof leads to the map root",
      mapAbsentOk: "the sparse-map proof shows no entry for this identifier",
      mapBad: (m) => `map proof fails: ${m}`,
      skipped: "not checked: an earlier check failed",
      malformed: (m) => `the answer is malformed: ${m}`,
      unsupported: (t) => `signature type ${t} cannot be checked in a browser`,
      noWebCrypto: "this browser withholds WebCrypto here (open the page over HTTPS or on localhost)",
    },
    history: "History",
    historyNote: "The list of changes is as the node reports it; each change is an entry of the log at its index.",
    historyEmpty: "No change of this identifier is logged.",
    colLogIndex: "Log index", colOp: "Change", colValues: "Values",
    opSet: "set", opDelete: "delete",
  },
  "zh-CN": {
    title: "标识解析",
    language: "语言",
    node: "节点",
    identifier: "标识",
    search: "解析",
    loading: "正在解析并验证……",
    error: (m) => `节点拒绝了请求：${m}`,
    netError: (m) => `无法连接节点：${m}`,
    record: "记录",
    verification: "本浏览器中的验证",
    proven: "已证明",
    provenAbsent: "已证明不存在",
    notProven: "未证明",
    serverOnly: "仅由服务器验证",
    foundAsOf: (id, n) => `${id}：日志大小为 ${n} 时的记录`,
    absentAsOf: (id, n) => `${id} 未注册（日志大小为 ${n} 时）`,
    notProvenNote: "请勿依赖此结果：至少有一项检查未通过。",
    colIndex: "索引", colType: "类型", colValue: "值", colTtl: "TTL", colTime: "时间戳",
    checkPolicy: "信任策略",
    checkLogSig: "检查点的日志签名",
    checkQuorum: "见证人联署（法定数量）",
    checkInclusion: "映射头包含在检查点中",
    checkMap: "记录在映射中",
    checkMapAbsent: "映射中不存在该标识",
    why: {
      policyOk: (logs, w, q) => `${logs} 个日志公钥，${w} 个见证人，法定数量 ${q}；与本浏览器固定的策略一致`,
      policyPinnedNow: (logs, w, q) => `${logs} 个日志公钥，${w} 个见证人，法定数量 ${q}；首次使用：本浏览器现已固定此策略（请与日志运营方提供的策略核对）`,
      policyChanged: (since) => `节点当前发布的策略与本浏览器于 ${since} 固定的策略不同：节点可能在其中写入了自己的密钥`,
      policyBad: (m) => `无法读取节点的策略：${m}`,
      noLogKey: (o) => `策略中没有名为 ${o} 的日志公钥`,
      logSigOk: (k) => `${k} 的 Ed25519 签名验证通过`,
      logSigMissing: (k) => `缺少 ${k} 的签名行`,
      logSigBad: (k) => `${k} 的签名验证失败`,
      cosigBad: (w) => `见证人 ${w} 的联署签名验证失败`,
      quorumOk: (names, q) => `${names} 的联署签名有效；满足法定数量 ${q}`,
      quorumShort: (names, q) => `有效联署：${names || "无"}；未达到法定数量 ${q}`,
      quorumNone: "策略不要求见证人",
      inclusionOk: (i, n) => `已验证叶子 ${i} 在大小为 ${n} 的树中的 RFC 6962 包含证明`,
      inclusionBad: (m) => `包含证明失败：${m}`,
      rolledBack: (n, seen) => `该检查点（日志大小 ${n}）比本浏览器已验证过的检查点（日志大小 ${seen}）更旧：视图被回滚或分叉`,
      stale: (i, n) => `索引 ${i} 处的映射头不是大小为 ${n} 的日志的最后一个叶子`,
      mapOk: "稀疏映射证明可推导出映射根",
      mapAbsentOk: "稀疏映射证明表明该标识没有条目",
      mapBad: (m) => `映射证明失败：${m}`,
      skipped: "未检查：前面的检查未通过",
      malformed: (m) => `应答格式错误：${m}`,
      unsupported: (t) => `浏览器无法验证签名类型 ${t}`,
      noWebCrypto: "浏览器在此页面上不提供 WebCrypto（请通过 HTTPS 或 localhost 打开）",
    },
    history: "历史记录",
    historyNote: "变更列表为节点所报告的内容；每项变更都是日志中对应索引处的条目。",
    historyEmpty: "日志中没有该标识的变更。",
    colLogIndex: "日志索引", colOp: "变更", colValues: "值",
    opSet: "设置", opDelete: "删除",
  },
};

const STORAGE_KEY = "edgeroot.console.lang";
export const LANGUAGES = Object.keys(STRINGS);

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

// t("why.stale") finds nested keys; the English text stands in for a key a language lacks.
export function t(key) {
  const find = (table) => key.split(".").reduce((o, k) => (o == null ? undefined : o[k]), table);
  const found = find(STRINGS[current]);
  return found === undefined ? find(STRINGS.en) : found;
}
