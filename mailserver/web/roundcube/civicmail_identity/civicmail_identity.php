<?php

/**
 * civicmail_identity: a citizen's Roundcube identity carries the registered real name.
 *
 * Roundcube 1.6 takes the login name from the OpenID Connect ID token (oauth_identity_fields) but
 * makes the first identity with the address alone. civicmail's provider puts the citizen's
 * registered name in the ID token's `name` claim (scope `profile`); this plugin reads it in the
 * `oauth_login` hook, which runs in the same request before the user is created, and gives it to
 * `user_create`. A user made before (without a name) gets it on the next sign-in, in `login_after`,
 * if their standard identity has no name yet; a name the citizen typed is never overwritten.
 *
 * Installed by `civicmail webmail config --plugins-dir DIR`; enabled by the configuration it prints.
 */
class civicmail_identity extends rcube_plugin
{
    public $task = 'login';

    /** @var string|null the `name` claim of this request's ID token */
    private $name = null;

    /** @var string|null the `email` claim of this request's ID token */
    private $email = null;

    function init()
    {
        $this->add_hook('oauth_login', [$this, 'oauth_login']);
        $this->add_hook('user_create', [$this, 'user_create']);
        $this->add_hook('login_after', [$this, 'login_after']);
    }

    function oauth_login($args)
    {
        $identity = isset($args['identity']) && is_array($args['identity']) ? $args['identity'] : [];
        if (isset($identity['name']) && is_string($identity['name']) && trim($identity['name']) !== '') {
            $this->name = trim($identity['name']);
        }
        if (isset($identity['email']) && is_string($identity['email'])) {
            $this->email = $identity['email'];
        }
        return $args;
    }

    function user_create($args)
    {
        if ($this->name !== null && empty($args['user_name'])) {
            $args['user_name'] = $this->name;
        }
        if ($this->email !== null && empty($args['user_email'])) {
            $args['user_email'] = $this->email;
        }
        return $args;
    }

    function login_after($args)
    {
        $rcmail = rcmail::get_instance();
        if ($this->name !== null && $rcmail->user && $rcmail->user->ID) {
            $identity = $rcmail->user->get_identity();
            if ($identity && trim((string) $identity['name']) === '') {
                $rcmail->user->update_identity($identity['identity_id'], ['name' => $this->name]);
            }
        }
        return $args;
    }
}
