// Entry point of the doppel CLI.
console.log('doppel');
