// The page's sign-in, shared by every tab of the browser: the token lives
// in localStorage, so a second tab opens signed in; a sign-out (or a sign-in
// as someone else) in one tab reaches the others through the storage event;
// and a token is renewed before its exp, so a long-open tab never drops the
// user mid-conversation. Renewal is the dev sign-in again (the page's only
// sign-in); when it fails the user is asked again, and the conversation in
// the address and the draft in the composer stay.

const TOKEN = "chatstream.token";
const USER = "chatstream.user";

// expiry returns a JWT's exp in milliseconds since the epoch, or 0.
export function expiry(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(payload)).exp;
    return typeof exp === "number" ? exp * 1000 : 0;
  } catch {
    return 0;
  }
}

export class Session extends EventTarget {
  constructor() {
    super();
    this.token = localStorage.getItem(TOKEN);
    this.user = localStorage.getItem(USER);
    if (this.token && expiry(this.token) && expiry(this.token) <= Date.now()) this.clear();
    this.timer = undefined;
    // Another tab signed in, renewed or signed out.
    window.addEventListener("storage", (ev) => {
      if (ev.storageArea !== localStorage || (ev.key !== TOKEN && ev.key !== null)) return;
      const token = localStorage.getItem(TOKEN);
      const user = localStorage.getItem(USER);
      const was = { token: this.token, user: this.user };
      this.token = token;
      this.user = user;
      this.schedule();
      if (!token) {
        if (was.token) this.dispatchEvent(new CustomEvent("signedout"));
      } else if (!was.token || was.user !== user) {
        this.dispatchEvent(new CustomEvent("signedin"));
      }
      // The same user with a renewed token: the socket takes it at its
      // next connect.
    });
  }

  // valid reports whether the token is still good for a while.
  valid() {
    return !!this.token && (expiry(this.token) === 0 || expiry(this.token) > Date.now() + 1000);
  }

  // signIn gets a token for name and shares it with every tab.
  async signIn(name) {
    const token = await devToken(name);
    this.set(token, name);
  }

  set(token, user) {
    this.token = token;
    this.user = user;
    localStorage.setItem(USER, user);
    localStorage.setItem(TOKEN, token);
    this.schedule();
  }

  // signOut forgets the token in every tab.
  signOut() {
    this.clear();
  }

  clear() {
    clearTimeout(this.timer);
    this.token = null;
    localStorage.removeItem(TOKEN);
    localStorage.removeItem(USER);
  }

  // schedule renews the token when two thirds of its life have passed (the
  // tab that renews first shares it; the others' timers move with it).
  schedule() {
    clearTimeout(this.timer);
    const exp = this.token ? expiry(this.token) : 0;
    if (!exp) return;
    const left = exp - Date.now();
    const renewIn = Math.max(0, left - Math.max(left / 3, 2000));
    // setTimeout holds at most 2^31-1 ms; a later renewal is rescheduled.
    this.timer = setTimeout(() => this.renew(), Math.min(renewIn, 2 ** 31 - 1));
  }

  async renew() {
    if (!this.token || !this.user) return;
    if (expiry(this.token) - Date.now() > 2 ** 31 - 1) return this.schedule();
    try {
      this.set(await devToken(this.user), this.user);
      this.dispatchEvent(new CustomEvent("renewed"));
    } catch {
      // Not renewable (the server may not offer dev sign-in): the user is
      // asked again once the token expires.
      const left = expiry(this.token) - Date.now();
      if (left > 0) this.timer = setTimeout(() => this.expired(), left);
      else this.expired();
    }
  }

  expired() {
    if (this.valid()) return;
    this.clear();
    this.dispatchEvent(new CustomEvent("signedout", { detail: "expired" }));
  }
}

async function devToken(user) {
  const res = await fetch("/v1/auth/dev-token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user }),
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error?.message || res.statusText);
  return data.token;
}
