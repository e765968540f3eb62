// The invite page: show the join code from the link and the command that joins with it.

const code = decodeURIComponent(location.pathname.split("/").pop() || "").toUpperCase();
document.getElementById("code").textContent = code;
document.getElementById("command").textContent =
  `tutti join ${location.origin} --code ${code} --name "Your Name" --part PART`;
