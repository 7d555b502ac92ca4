// Passkeys (WebAuthn) on the account page and at sign-in: progressive enhancement, no build step.
// A form with data-passkey="create" (the account page) asks its data-options-url for the options
// of navigator.credentials.create(); one with data-passkey="get" (the sign-in's second step)
// carries the options of navigator.credentials.get() in data-options. Either way the browser's
// answer goes into the form's "credential" field and the form is posted as any other: the server
// checks it and answers with a page. Without WebAuthn the button stays hidden and the form's
// note says so.
"use strict";
(function () {
  if (!window.PublicKeyCredential || !navigator.credentials) {
    return;
  }
  function bytes(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    var raw = atob(b64 + "===".slice((b64.length + 3) % 4));
    var out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) {
      out[i] = raw.charCodeAt(i);
    }
    return out.buffer;
  }
  function text(buffer) {
    var view = new Uint8Array(buffer), raw = "";
    for (var i = 0; i < view.length; i++) {
      raw += String.fromCharCode(view[i]);
    }
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function descriptors(list) {
    return (list || []).map(function (d) {
      return { type: d.type, id: bytes(d.id), transports: d.transports };
    });
  }
  // the JSON forms of the options and of the answer (WebAuthn level 3), for browsers without
  // PublicKeyCredential.parseCreationOptionsFromJSON and toJSON()
  function creationOptions(o) {
    if (PublicKeyCredential.parseCreationOptionsFromJSON) {
      return PublicKeyCredential.parseCreationOptionsFromJSON(o);
    }
    var copy = Object.assign({}, o);
    copy.challenge = bytes(o.challenge);
    copy.user = Object.assign({}, o.user, { id: bytes(o.user.id) });
    copy.excludeCredentials = descriptors(o.excludeCredentials);
    return copy;
  }
  function requestOptions(o) {
    if (PublicKeyCredential.parseRequestOptionsFromJSON) {
      return PublicKeyCredential.parseRequestOptionsFromJSON(o);
    }
    var copy = Object.assign({}, o);
    copy.challenge = bytes(o.challenge);
    copy.allowCredentials = descriptors(o.allowCredentials);
    return copy;
  }
  function answer(credential) {
    if (credential.toJSON) {
      return credential.toJSON();
    }
    var r = credential.response, json = {
      id: credential.id, rawId: text(credential.rawId), type: credential.type,
      clientExtensionResults: credential.getClientExtensionResults(),
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      response: { clientDataJSON: text(r.clientDataJSON) }
    };
    if (r.attestationObject) {
      json.response.attestationObject = text(r.attestationObject);
      json.response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      json.response.authenticatorData = text(r.authenticatorData);
      json.response.signature = text(r.signature);
      if (r.userHandle) {
        json.response.userHandle = text(r.userHandle);
      }
    }
    return json;
  }
  function say(form, message) {
    var status = form.querySelector(".passkey-status");
    if (status) {
      status.textContent = message;
    }
  }
  function options(form) {
    if (form.dataset.passkey === "get") {
      return Promise.resolve(JSON.parse(form.dataset.options));
    }
    return fetch(form.dataset.optionsUrl, {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRF-Token": form.elements.csrf_token.value }
    }).then(function (response) {
      if (!response.ok) {
        throw new Error("options " + response.status);
      }
      return response.json();
    });
  }
  function ceremony(form) {
    return options(form).then(function (o) {
      return form.dataset.passkey === "get"
        ? navigator.credentials.get({ publicKey: requestOptions(o) })
        : navigator.credentials.create({ publicKey: creationOptions(o) });
    });
  }
  document.querySelectorAll("form[data-passkey]").forEach(function (form) {
    var button = form.querySelector("button[type=submit]");
    var note = form.querySelector(".passkey-unsupported");
    if (note) {
      note.hidden = true;
    }
    button.hidden = false;
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!form.reportValidity()) {
        return;
      }
      button.disabled = true;
      say(form, "请按浏览器的提示确认……");
      ceremony(form).then(function (credential) {
        form.elements.credential.value = JSON.stringify(answer(credential));
        say(form, "正在验证……");
        form.submit();
      }).catch(function (error) {
        button.disabled = false;
        say(form, error && error.name === "NotAllowedError"
          ? "已取消或超时，请重试。"
          : "此设备未能完成通行密钥操作，请重试。");
      });
    });
  });
})();
