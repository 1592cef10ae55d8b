// A page's language switch over its own string tables ({"en": {...}, "zh-CN": {...}}): the choice is
// remembered in the browser, first taken from the browser's language. Elements with data-i18n="key"
// are relabelled on a switch; a string is a function when it takes arguments.
export function languages(strings, storageKey) {
  let current = "en";

  function initialLanguage() {
    const saved = localStorage.getItem(storageKey);
    if (saved && strings[saved]) return saved;
    return (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh-CN" : "en";
  }

  // t("why.stale") finds nested keys; the English text stands in for a key a language lacks.
  function t(key) {
    const find = (table) => key.split(".").reduce((o, k) => (o == null ? undefined : o[k]), table);
    const found = find(strings[current]);
    return found === undefined ? find(strings.en) : found;
  }

  function setLanguage(lang) {
    current = strings[lang] ? lang : "en";
    localStorage.setItem(storageKey, current);
    document.documentElement.lang = current;
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  }

  // Drives the page's <select> of languages: shows the initial one; on a change, switches and re-renders.
  function bindSelect(select, rerender) {
    select.addEventListener("change", () => {
      setLanguage(select.value);
      rerender();
    });
    select.value = initialLanguage();
    setLanguage(select.value);
  }

  return { initialLanguage, setLanguage, language: () => current, t, bindSelect };
}
